"""Scaling-law forms L(N, D, precision) with their parameters, bounds, start grids and gradients.

A law is one small frozen dataclass. It declares
  * `params`: the fitted constants (named as in the formula), each with bounds, whether it is
    fitted as log(value), and default start values *in the fitting coordinate* (log(value) for
    log-fitted constants, the value itself otherwise);
  * `efficiencies`: per-recipe multipliers (effN, effD, eff) fitted in a second stage against a
    frozen base fitted on the baseline recipe; the baseline's efficiencies are fixed at 1;
  * `features`: extra runs-table columns it reads; `varying`: columns that must take at least two
    distinct values for the law to be identifiable;
  * `evaluate(p, x, grad)`: the vectorized loss and, if asked, dL/dp for every parameter
    (natural coordinates). `p` maps names to floats (efficiencies may be per-row arrays);
    `x` maps "N", "D" and feature names to arrays.
Formulas and published constants: /work/shared/reference/scaling-laws.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]
Grads = dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class Param:
    """A fitted constant: bounds in natural units; `start` values are in the fitting coordinate."""

    name: str
    lower: float
    upper: float
    log: bool
    start: tuple[float, ...]


def _steps(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.round(np.arange(lo, hi + step / 2, step), 10))


def _log_param(name: str, start: tuple[float, ...], lower: float = 1e-8, upper: float = 1e17) -> Param:
    return Param(name=name, lower=lower, upper=upper, log=True, start=start)


def _exponent(name: str, start: tuple[float, ...], upper: float = 4.0) -> Param:
    return Param(name=name, lower=0.0, upper=upper, log=False, start=start)


def _eff(name: str, upper: float = 1.0) -> Param:
    return Param(name=name, lower=1e-6, upper=upper, log=True, start=tuple(math.log(v) for v in (0.05, 0.3, upper)))


class Law:
    """Shared helpers: parameter lookup, prediction, options for the registry and fit records."""

    efficiencies: tuple[Param, ...] = ()
    features: tuple[str, ...] = ()
    varying: tuple[str, ...] = ()

    def predict(self, p: Mapping[str, float | np.ndarray], x: Arrays) -> np.ndarray:
        """Predicted loss for every row of `x` (efficiencies missing from `p` count as 1)."""
        full = {e.name: 1.0 for e in self.efficiencies} | dict(p)
        return self.evaluate(full, x, grad=False)[0]

    def adapt(self, columns: tuple[str, ...]) -> Law:
        """The variant of this law that matches the runs table's columns (default: unchanged)."""
        return self

    def options(self) -> dict[str, object]:
        """Constructor options, so `get_law(name, **options)` rebuilds this exact law."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class Chinchilla(Law):
    """L = E + A/N^alpha + B/D^beta (Hoffmann et al.), fitted as Epoch's a, b, e = log A, log B, log E.

    The default start grid is Epoch's 4,500 points: alpha, beta in {0, 0.5, ..., 2},
    e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}.
    """

    name = "chinchilla"
    params = (
        _log_param("A", _steps(0, 25, 5)), _exponent("alpha", _steps(0, 2, 0.5)),
        _log_param("B", _steps(0, 25, 5)), _exponent("beta", _steps(0, 2, 0.5)),
        _log_param("E", _steps(-1, 1, 0.5)),
    )

    def evaluate(self, p, x, grad=True):
        tn = p["A"] * x["N"] ** -p["alpha"]
        td = p["B"] * x["D"] ** -p["beta"]
        loss = p["E"] + tn + td
        if not grad:
            return loss, None
        return loss, {"A": tn / p["A"], "alpha": -tn * np.log(x["N"]), "B": td / p["B"],
                      "beta": -td * np.log(x["D"]), "E": np.ones_like(loss)}


@dataclass(frozen=True, kw_only=True)
class Quest(Law):
    """L = A/(N*eff)^alpha + B/D^beta + E (QuEST); eff per recipe, baseline eff = 1.

    eff may exceed 1 slightly (QuEST measured 1.016 for INT8), so its upper bound is 2.
    Default grid is QuEST's: a, b in {5, ..., 25}, alpha, beta in {0, 0.5, 1}, e in {-1, ..., 1}.
    """

    name = "quest"
    params = (
        _log_param("A", _steps(5, 25, 5)), _exponent("alpha", _steps(0, 1, 0.5)),
        _log_param("B", _steps(5, 25, 5)), _exponent("beta", _steps(0, 1, 0.5)),
        _log_param("E", _steps(-1, 1, 0.5)),
    )
    efficiencies = (_eff("eff", upper=2.0),)

    def evaluate(self, p, x, grad=True):
        neff = x["N"] * p["eff"]
        tn = p["A"] * neff ** -p["alpha"]
        td = p["B"] * x["D"] ** -p["beta"]
        loss = p["E"] + tn + td
        if not grad:
            return loss, None
        return loss, {"A": tn / p["A"], "alpha": -tn * np.log(neff), "B": td / p["B"],
                      "beta": -td * np.log(x["D"]), "E": np.ones_like(loss),
                      "eff": -p["alpha"] * tn / p["eff"]}


@dataclass(frozen=True, kw_only=True)
class Quartet(Law):
    """L = (A/(N*effN)^alpha + B/(D*effD)^beta)^gamma + E (Quartet); effN, effD per recipe in (0, 1].

    Default grid: 3x3x3x3x2x3 = 486 starts, the shape of Quartet's base-fit grid.
    """

    name = "quartet"
    params = (
        _log_param("A", (5.0, 10.0, 15.0)), _exponent("alpha", (0.2, 0.5, 0.8)),
        _log_param("B", (5.0, 10.0, 15.0)), _exponent("beta", (0.2, 0.5, 0.8)),
        _exponent("gamma", (0.3, 1.0)), _log_param("E", (-0.5, 0.0, 0.5)),
    )
    efficiencies = (_eff("effN"), _eff("effD"))

    def evaluate(self, p, x, grad=True):
        n_eff, d_eff = x["N"] * p["effN"], x["D"] * p["effD"]
        tn = p["A"] * n_eff ** -p["alpha"]
        td = p["B"] * d_eff ** -p["beta"]
        s = tn + td
        sg = s ** p["gamma"]
        loss = sg + p["E"]
        if not grad:
            return loss, None
        ds = p["gamma"] * sg / s
        return loss, {"A": ds * tn / p["A"], "alpha": -ds * tn * np.log(n_eff),
                      "B": ds * td / p["B"], "beta": -ds * td * np.log(d_eff),
                      "gamma": sg * np.log(s), "E": np.ones_like(loss),
                      "effN": -ds * p["alpha"] * tn / p["effN"], "effD": -ds * p["beta"] * td / p["effD"]}


@dataclass(frozen=True, kw_only=True)
class Kumar(Law):
    """L = A*N_eff^-alpha + B*D^-beta + E (+ delta_PTQ) (Kumar et al., "Scaling Laws for Precision").

    N_eff = N * prod_x (1 - exp(-P_x/gamma_x)) over x in {w, a, kv} (columns bits_w, bits_a,
    bits_kv; `kv=False` drops the kv factor). With `ptq=True`, delta_PTQ =
    C_T*exp(-P_post/gamma_post)*D^gamma_D/N^gamma_N with P_post from column ptq_bits; a row whose
    ptq_bits is missing had no post-training quantization and gets delta_PTQ = 0.
    `adapt` picks kv/ptq from the columns present.
    """

    kv: bool = True
    ptq: bool = False
    name = "kumar"

    @property
    def _bits(self) -> tuple[str, ...]:
        return ("w", "a", "kv") if self.kv else ("w", "a")

    @property
    def params(self) -> tuple[Param, ...]:
        base = (_log_param("A", (5.0, 10.0)), _exponent("alpha", (0.3, 0.6)),
                _log_param("B", (5.0, 10.0)), _exponent("beta", (0.3, 0.6)), _log_param("E", (0.0, 1.0)))
        gammas = tuple(_log_param(f"gamma_{b}", (0.0, 1.0), lower=1e-3, upper=1e3) for b in self._bits)
        ptq = (_log_param("C_T", (-3.0,)), _log_param("gamma_post", (0.0, 1.0), lower=1e-3, upper=1e3),
               _exponent("gamma_D", (0.5,), upper=2.0), _exponent("gamma_N", (0.3,), upper=2.0))
        return base + gammas + (ptq if self.ptq else ())

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f"bits_{b}" for b in self._bits) + (("ptq_bits",) if self.ptq else ())

    @property
    def varying(self) -> tuple[str, ...]:
        return self.features

    def adapt(self, columns):
        return dataclasses.replace(self, kv="bits_kv" in columns, ptq="ptq_bits" in columns)

    def evaluate(self, p, x, grad=True):
        decay = {b: np.exp(-x[f"bits_{b}"] / p[f"gamma_{b}"]) for b in self._bits}
        fac = {b: 1.0 - v for b, v in decay.items()}
        neff = x["N"] * np.prod(np.stack(list(fac.values())), axis=0)
        tn = p["A"] * neff ** -p["alpha"]
        td = p["B"] * x["D"] ** -p["beta"]
        loss = tn + td + p["E"]
        g: Grads = {}
        if grad:
            g = {"A": tn / p["A"], "alpha": -tn * np.log(neff), "B": td / p["B"],
                 "beta": -td * np.log(x["D"]), "E": np.ones_like(loss)}
            for b, f in fac.items():  # d f / d gamma = -exp(-P/gamma) * P/gamma^2
                bits, gam = x[f"bits_{b}"], p[f"gamma_{b}"]
                g[f"gamma_{b}"] = p["alpha"] * tn / f * decay[b] * bits / gam**2
        if self.ptq:
            post = x["ptq_bits"]
            has = np.isfinite(post)
            post = np.where(has, post, 0.0)
            dptq = np.where(has, p["C_T"] * np.exp(-post / p["gamma_post"])
                            * x["D"] ** p["gamma_D"] / x["N"] ** p["gamma_N"], 0.0)
            loss = loss + dptq
            if grad:
                g |= {"C_T": dptq / p["C_T"], "gamma_post": dptq * post / p["gamma_post"] ** 2,
                      "gamma_D": dptq * np.log(x["D"]), "gamma_N": -dptq * np.log(x["N"])}
        return loss, (g if grad else None)


@dataclass(frozen=True, kw_only=True)
class FpEmb(Law):
    """Floating-point (E, M, B) law ("Capybara", Sun et al.), divisor form:

    L = n/N^alpha + d/D^beta + eps + (D^beta/N^alpha) * K, K = log2(B)/(gamma*(E+0.5)^delta*(M+0.5)^nu)
    with E, M, B from columns exp_bits, man_bits, block. Constants are unknown: refit them.
    """

    name = "fp_emb"
    params = (
        _log_param("n", (3.0, 8.0)), _exponent("alpha", (0.3, 0.6)),
        _log_param("d", (3.0, 8.0)), _exponent("beta", (0.3, 0.6)), _log_param("eps", (0.0, 1.0)),
        _log_param("gamma", (0.0, 5.0)), _exponent("delta", (0.5, 2.0), upper=10.0),
        _exponent("nu", (0.5, 2.0), upper=10.0),
    )
    features = ("exp_bits", "man_bits", "block")
    varying = features

    def precision_factor(self, p, x) -> tuple[np.ndarray, Grads]:
        """K(E, M, B) and its gradient with respect to the precision constants."""
        eb, mb = x["exp_bits"] + 0.5, x["man_bits"] + 0.5
        k = np.log2(x["block"]) / (p["gamma"] * eb ** p["delta"] * mb ** p["nu"])
        return k, {"gamma": -k / p["gamma"], "delta": -k * np.log(eb), "nu": -k * np.log(mb)}

    def evaluate(self, p, x, grad=True):
        t1 = p["n"] * x["N"] ** -p["alpha"]
        t2 = p["d"] * x["D"] ** -p["beta"]
        scale = x["D"] ** p["beta"] * x["N"] ** -p["alpha"]
        k, dk = self.precision_factor(p, x)
        t3 = scale * k
        loss = t1 + t2 + p["eps"] + t3
        if not grad:
            return loss, None
        g = {"n": t1 / p["n"], "alpha": -(t1 + t3) * np.log(x["N"]), "d": t2 / p["d"],
             "beta": (t3 - t2) * np.log(x["D"]), "eps": np.ones_like(loss)}
        return loss, g | {name: scale * v for name, v in dk.items()}

    def critical_data_size(self, p, N, E, M, B) -> np.ndarray:
        """D minimizing d*D^-beta + K*D^beta/N^alpha: [d*N^alpha/K(E, M, B)]^(1/(2*beta)).

        Beyond it more data raises the loss (scaling-laws.md section 5).
        """
        x = {"exp_bits": np.asarray(E, float), "man_bits": np.asarray(M, float), "block": np.asarray(B, float)}
        k, _ = self.precision_factor(p, x)
        return (p["d"] * np.asarray(N, float) ** p["alpha"] / k) ** (1.0 / (2.0 * p["beta"]))


@dataclass(frozen=True, kw_only=True)
class FpEmbPow(FpEmb):
    """The other reading of the FP law: gamma is an exponent on log2(B), no separate scale:

    K = log2(B)^gamma / ((E+0.5)^delta*(M+0.5)^nu). Fit both forms and compare fit quality.
    """

    name = "fp_emb_pow"
    params = FpEmb.params[:5] + (_exponent("gamma", (0.5, 1.0, 2.0), upper=10.0),) + FpEmb.params[6:]

    def precision_factor(self, p, x):
        eb, mb = x["exp_bits"] + 0.5, x["man_bits"] + 0.5
        lb = np.log2(x["block"])
        k = lb ** p["gamma"] / (eb ** p["delta"] * mb ** p["nu"])
        log_lb = np.log(np.where(lb > 0, lb, 1.0))
        return k, {"gamma": k * log_lb, "delta": -k * np.log(eb), "nu": -k * np.log(mb)}


LAWS: dict[str, type[Law]] = {c.name: c for c in (Chinchilla, Quartet, Quest, Kumar, FpEmb, FpEmbPow)}

# Published constants (scaling-laws.md), for regression tests and comparisons.
EPOCH_CHINCHILLA_BEST = {"A": 477.8, "B": 2143.9, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672}
EPOCH_CHINCHILLA_MLE = {"A": 482.0, "B": 2085.4, "E": 1.817, "alpha": 0.348, "beta": 0.366}
QUARTET_NOTEBOOK = {"A": 127445.0, "alpha": 0.5785, "B": 465834.0, "beta": 0.5389, "gamma": 0.2764, "E": 1.3408}
QUARTET_PAPER = {"A": 1.52e5, "alpha": 0.589, "B": 5.25e5, "beta": 0.544, "gamma": 0.274, "E": 1.35}


def get_law(name: str, **options) -> Law:
    """The law registered as `name` (options as recorded by `law.options()`)."""
    if name not in LAWS:
        raise ValueError(f"law {name!r} unknown; choose from {', '.join(LAWS)}")
    return LAWS[name](**options)
