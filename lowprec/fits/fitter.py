"""Fit a scaling law: Huber on log-loss residuals, L-BFGS-B from every grid start, bootstrap CIs.

Procedure (Epoch's Chinchilla replication, generalized; scaling-laws.md section 8):
  * objective: sum_i Huber_delta(log Lhat_i - log L_i), delta explicit (default 1e-3);
  * positive constants are fitted as log(value); the gradient is analytic (law.evaluate);
  * scipy L-BFGS-B from every point of the start grid; the best objective wins (never the last);
  * bootstrap: resample runs with replacement, refit each resample from the best fit, and report
    percentile CIs;
  * staged laws (per-recipe efficiencies): fit the base on the baseline recipe, freeze it, then
    fit the efficiencies of every other recipe against it (their CIs hold the base fixed);
  * fits the data cannot identify are refused with a ValueError naming the reason.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from lowprec.fits.laws import LAWS, Law, Param, get_law
from lowprec.fits.results import ALL, FitSet, LawFit, StageFit
from lowprec.fits.table import RunsTable

PRECISION_COLUMNS = ("bits_w", "bits_a", "bits_g", "bits_kv", "exp_bits", "man_bits", "block", "ptq_bits")


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """Every knob of a fit; all of it is recorded in fit.json."""

    law: str
    delta: float = 1e-3
    grid: Mapping[str, tuple[float, ...]] | None = None  # per-parameter starts (fitting coordinate)
    bootstrap: int = 0
    seed: int = 42
    ci_level: float = 0.95
    baseline: str = "bf16"
    efficiencies: tuple[str, ...] | None = None  # None: all of the law's efficiencies
    by: str | None = None  # "recipe": fit each recipe separately (laws without efficiencies)
    maxiter: int = 15000
    gtol: float = 1e-5
    ftol: float = 2.220446049250313e-09

    def __post_init__(self):
        if self.law not in LAWS:
            raise ValueError(f"law {self.law!r} unknown; choose from {', '.join(LAWS)}")
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0, got {self.delta}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.by not in (None, "recipe"):
            raise ValueError(f"by must be None or 'recipe', got {self.by!r}")
        law = get_law(self.law)
        if self.by == "recipe" and law.efficiencies:
            raise ValueError(f"by='recipe' is for laws without per-recipe efficiencies; {self.law} fits them in stages")
        valid = tuple(e.name for e in law.efficiencies)
        if self.efficiencies is not None and (not self.efficiencies or set(self.efficiencies) - set(valid)):
            raise ValueError(f"efficiencies {self.efficiencies} invalid for {self.law}; choose from {', '.join(valid)}")


@dataclass(frozen=True, kw_only=True)
class StartsResult:
    """The best local fit over a set of starts."""

    x: np.ndarray
    value: float
    start: int
    n_starts: int


def huber(r: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber_delta(r) (r^2/2 inside |r| <= delta, delta*(|r| - delta/2) outside) and d/dr.

    With m = min(|r|, delta) both branches are m*(|r| - m/2), and d/dr = clip(r, -delta, delta).
    """
    a = np.abs(r)
    m = np.minimum(a, delta)
    return float(np.dot(m, a - 0.5 * m)), np.clip(r, -delta, delta)


def best_of_starts(fun: Callable, starts: np.ndarray, bounds: Sequence[tuple[float, float]],
                   options: Mapping[str, float]) -> StartsResult:
    """Run L-BFGS-B (fun returns value and gradient) from every start; keep the lowest objective."""
    best_x, best_value, best_start = None, np.inf, -1
    # One BLAS thread: L-BFGS-B's tiny BLAS calls run ~10x slower when OpenBLAS spreads them.
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(all="ignore"):
        for i, x0 in enumerate(starts):
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=dict(options))
            if np.isfinite(res.fun) and res.fun < best_value:
                best_x, best_value, best_start = np.array(res.x), float(res.fun), i
    if best_x is None:
        raise ValueError(f"no start out of {len(starts)} gave a finite objective")
    return StartsResult(x=best_x, value=best_value, start=best_start, n_starts=len(starts))


class _Objective:
    """Huber objective over the free parameters (fitting coordinates), others held fixed."""

    def __init__(self, law: Law, free: Sequence[Param], fixed: Mapping[str, float],
                 x: Mapping[str, np.ndarray], loss: np.ndarray, delta: float):
        self.law, self.free, self.fixed, self.x, self.delta = law, tuple(free), dict(fixed), x, delta
        self.log_loss = np.log(loss)
        self.is_log = np.array([p.log for p in self.free])
        self.names = tuple(p.name for p in self.free)
        # The optimizer sees sum(Huber)/delta^2: L-BFGS-B's ftol is absolute below 1, so an
        # unscaled objective of ~1e-6 would stop it before it converges.
        self.scale = 1.0 / delta

    def natural(self, u: np.ndarray) -> dict[str, float]:
        return dict(zip(self.names, np.where(self.is_log, np.exp(u), u).tolist()))

    def bounds(self) -> list[tuple[float, float]]:
        return [(np.log(p.lower), np.log(p.upper)) if p.log else (p.lower, p.upper) for p in self.free]

    def __call__(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        vals = np.where(self.is_log, np.exp(u), u)
        p = dict(zip(self.names, vals.tolist()))
        pred, grads = self.law.evaluate(self.fixed | p, self.x, grad=True)
        value, psi = huber(np.log(pred) - self.log_loss, self.delta)
        # d/du sum Huber(log Lhat - log L) = sum psi * (dLhat/dp) / Lhat * (p if fitted as log p)
        g = np.stack([grads[n] for n in self.names]) @ (psi / pred) * np.where(self.is_log, vals, 1.0)
        if not (np.isfinite(value) and np.isfinite(g).all()):
            return 1e30, np.zeros_like(u)
        return value * self.scale, g * self.scale

    def resample(self, idx: np.ndarray) -> _Objective:
        x = {k: v[idx] for k, v in self.x.items()}
        return _Objective(self.law, self.free, self.fixed, x, np.exp(self.log_loss[idx]), self.delta)


def start_grid(free: Sequence[Param], overrides: Mapping[str, Sequence[float]] | None) -> np.ndarray:
    """Cartesian product of each free parameter's starts (overrides replace a parameter's starts)."""
    overrides = dict(overrides or {})
    columns = [tuple(overrides.pop(p.name, p.start)) for p in free]
    if not all(columns):
        raise ValueError("every grid axis needs at least one start value")
    return np.array(list(itertools.product(*columns)), dtype=np.float64)


def _check_identifiable(what: str, n_free: int, x: Mapping[str, np.ndarray], varying: Sequence[str]) -> None:
    n = len(next(iter(x.values())))
    if n < n_free + 1:
        raise ValueError(f"{what}: {n} runs cannot identify {n_free} parameters; need at least {n_free + 1}")
    for name in varying:
        values = x[name][np.isfinite(x[name])]
        if len(np.unique(values)) < 2:
            raise ValueError(f"{what}: column {name!r} has {len(np.unique(values))} distinct value(s); "
                             f"the law needs at least 2 to identify its dependence on {name}")


def _fit_stage(obj: _Objective, grid: np.ndarray, config: FitConfig, rng: np.random.Generator) -> StageFit:
    options = {"maxiter": config.maxiter, "gtol": config.gtol, "ftol": config.ftol}
    bounds = obj.bounds()
    grid = np.clip(grid, [b[0] for b in bounds], [b[1] for b in bounds])
    best = best_of_starts(obj, grid, bounds, options)
    params = obj.natural(best.x)
    ci: dict[str, tuple[float, float]] = {}
    if config.bootstrap:
        n = len(obj.log_loss)
        draws = []
        for _ in range(config.bootstrap):
            sub = obj.resample(rng.integers(0, n, size=n))
            draws.append(list(sub.natural(best_of_starts(sub, best.x[None, :], bounds, options).x).values()))
        q = 100 * np.array([(1 - config.ci_level) / 2, (1 + config.ci_level) / 2])
        lo, hi = np.percentile(np.array(draws), q, axis=0)
        ci = {name: (float(a), float(b)) for name, a, b in zip(params, lo, hi)}
    return StageFit(params=params, fixed=dict(obj.fixed), ci=ci, objective=best.value / obj.scale, n_points=len(obj.log_loss),
                    grid_size=len(grid), best_start=best.start, n_bootstrap=config.bootstrap)


def _grid_for(free: Sequence[Param], config: FitConfig) -> np.ndarray:
    names = {p.name for p in free}
    return start_grid(free, {k: v for k, v in (config.grid or {}).items() if k in names})


def residual_summary(law: Law, fit: LawFit, table: RunsTable) -> dict[str, object]:
    """Log-loss residuals (log Lhat - log L): overall and per recipe."""
    def stats(r: np.ndarray) -> dict[str, float]:
        return {"n": int(len(r)), "mean": float(r.mean()), "rms": float(np.sqrt(np.mean(r * r))),
                "max_abs": float(np.abs(r).max())}

    per = {rec: log_residuals(law, fit, table.select(rec)) for rec in fit.recipes}
    return stats(np.concatenate(list(per.values()))) | {"by_recipe": {k: stats(v) for k, v in per.items()}}


def log_residuals(law: Law, fit: LawFit, table: RunsTable) -> np.ndarray:
    """log Lhat - log L for the runs of a one-recipe table."""
    (recipe,) = table.recipes
    x = table.data(law.features)
    return np.log(law.predict(fit.params_for(recipe), x)) - np.log(x["L"])


def _fit_group(law: Law, table: RunsTable, config: FitConfig, rng: np.random.Generator) -> LawFit:
    eff_names = config.efficiencies or tuple(e.name for e in law.efficiencies)
    eff_fixed = {e.name: 1.0 for e in law.efficiencies}
    staged = bool(law.efficiencies)
    if staged and config.baseline not in table.recipes:
        raise ValueError(f"law {law.name} fits efficiencies against the baseline recipe {config.baseline!r}, "
                         f"which is not in the runs table; recipes present: {', '.join(table.recipes)}")
    base_table = table.select(config.baseline) if staged else table
    x = base_table.data(law.features)
    what = f"{law.name} base fit on {config.baseline!r}" if staged else f"{law.name} fit"
    _check_identifiable(what, len(law.params), x, ("N", "D", *law.varying))
    obj = _Objective(law, law.params, eff_fixed, x, x["L"], config.delta)
    shared = _fit_stage(obj, _grid_for(law.params, config), config, rng)
    efficiency = {}
    free = tuple(e for e in law.efficiencies if e.name in eff_names)
    for recipe in table.recipes:
        if not staged or recipe == config.baseline:
            continue
        xr = table.select(recipe).data(law.features)
        _check_identifiable(f"{law.name} efficiency fit for {recipe!r}", len(free), xr, ())
        fixed = shared.params | {k: v for k, v in eff_fixed.items() if k not in eff_names}
        efficiency[recipe] = _fit_stage(_Objective(law, free, fixed, xr, xr["L"], config.delta),
                                        _grid_for(free, config), config, rng)
    fit = LawFit(recipes=table.recipes, staged=staged, shared=shared, efficiency=efficiency)
    return replace(fit, residuals=residual_summary(law, fit, table))


def recipe_features(table: RunsTable) -> dict[str, dict[str, float]]:
    """Per recipe, the precision columns that hold one value for all its runs (for prediction)."""
    out = {}
    for recipe in table.recipes:
        sub = table.select(recipe)
        out[recipe] = {}
        for name in PRECISION_COLUMNS:
            if name in table.columns:
                values = np.unique(sub.array(name))
                if len(values) == 1 and np.isfinite(values[0]):
                    out[recipe][name] = float(values[0])
    return out


def fit(table: RunsTable, config: FitConfig) -> FitSet:
    """Fit `config.law` to the runs of `table` (per recipe when `config.by == "recipe"`)."""
    if len(table) == 0:
        raise ValueError(f"no usable runs to fit ({len(table.excluded)} excluded)")
    law = get_law(config.law).adapt(table.columns)
    for name in law.features:
        if name not in table.columns:
            raise ValueError(f"law {law.name} needs column {name!r}; present columns: {', '.join(table.columns)}")
    all_names = {p.name for p in law.params} | {e.name for e in law.efficiencies}
    unknown = set(config.grid or {}) - all_names
    if unknown:
        raise ValueError(f"grid names {sorted(unknown)} are not parameters of {law.name}; choose from {sorted(all_names)}")
    rng = np.random.default_rng(config.seed)
    groups = {r: table.select(r) for r in table.recipes} if config.by == "recipe" else {ALL: table}
    fits = {name: _fit_group(law, sub, config, rng) for name, sub in groups.items()}
    return FitSet(law=law.name, law_options=law.options(), by=config.by,
                  baseline=config.baseline if law.efficiencies else None,
                  config=json.loads(json.dumps(asdict(config) | {"loss_column": table.loss_column})), fits=fits,
                  exclusions=table.excluded, recipe_features=recipe_features(table))
