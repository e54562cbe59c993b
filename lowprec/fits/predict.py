"""Compute-optimal allocation from a fitted law: N*, D* per recipe, and the best precision.

Cost model (user-changeable, `CostModel`): a budget C is counted in 16-bit-equivalent FLOPs and a
recipe whose GEMM operands average P bits pays

    cost = 6 * N * D * (P / reference_bits) ** power,

with P the mean of the recipe's `bits_columns` that the runs table records (default bits_w,
bits_a, bits_g; reference 16 bits). `power=1` ("linear") is Kumar et al.'s cost proportional to
N*D*P: an FP8 recipe gets twice the N*D of BF16 for the same budget. `power=0` ("flat") ignores
precision (plain C = 6ND). The compute-optimal precision is the recipe with the lowest predicted
loss at its own optimal allocation under that budget.

Chinchilla has the closed form G = (alpha*A/(beta*B))^(1/(alpha+beta)),
N* = G*(C'/6)^(beta/(alpha+beta)), D* = G^-1*(C'/6)^(alpha/(alpha+beta)) with C' = C/cost
multiplier; every other law is minimized numerically over log N along N*D = C'/6.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.optimize import minimize_scalar

from lowprec.fits.laws import Chinchilla, Law
from lowprec.fits.results import FitSet


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """cost = 6*N*D*(P/reference_bits)^power, P = mean of the recipe's recorded bits columns."""

    power: float = 1.0
    reference_bits: float = 16.0
    bits_columns: tuple[str, ...] = ("bits_w", "bits_a", "bits_g")

    def __post_init__(self):
        if self.power < 0 or not self.reference_bits > 0 or not self.bits_columns:
            raise ValueError(f"CostModel needs power >= 0, reference_bits > 0 and bits columns; got {self}")

    def bits(self, recipe: str, features: Mapping[str, float]) -> float | None:
        """Mean bits per GEMM operand of a recipe (None when the cost is flat and none are recorded)."""
        present = [features[c] for c in self.bits_columns if c in features]
        if present:
            return float(np.mean(present))
        if self.power == 0:
            return None
        raise ValueError(f"recipe {recipe!r} records none of the bits columns {', '.join(self.bits_columns)} "
                         "that the cost model needs; pass other --bits-columns or --cost-model flat")

    def multiplier(self, bits: float | None) -> float:
        return 1.0 if bits is None else (bits / self.reference_bits) ** self.power


COST_MODELS = {"linear": CostModel(power=1.0), "flat": CostModel(power=0.0)}


@dataclass(frozen=True, kw_only=True)
class Allocation:
    """The loss-optimal run of one recipe for a compute budget."""

    recipe: str
    compute: float
    bits: float | None
    cost_multiplier: float
    n_params: float
    tokens: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.n_params


def chinchilla_optimum(p: Mapping[str, float], flops_6nd: float) -> tuple[float, float]:
    """Closed-form (N*, D*) of E + A/N^alpha + B/D^beta under 6*N*D = flops_6nd."""
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    c6 = flops_6nd / 6.0
    return g * c6 ** (b / (a + b)), c6 ** (a / (a + b)) / g


def numeric_optimum(law: Law, p: Mapping[str, float], features: Mapping[str, float],
                    flops_6nd: float) -> tuple[float, float]:
    """(N*, D*) minimizing the law along N*D = flops_6nd/6: a log grid, then bounded Brent."""
    c6 = flops_6nd / 6.0
    x_feat = {k: np.array([v], dtype=np.float64) for k, v in features.items()}

    def loss(log_n: np.ndarray) -> np.ndarray:
        n = np.exp(log_n)
        return law.predict(p, {"N": n, "D": c6 / n, **{k: np.broadcast_to(v, n.shape) for k, v in x_feat.items()}})

    grid = np.linspace(0.0, np.log(c6), 801)  # N from 1 to C/6 parameters
    with np.errstate(all="ignore"):
        values = loss(grid)
    i = int(np.nanargmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(lambda t: float(loss(np.array([t]))[0]), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-10})
    n = float(np.exp(res.x))
    return n, c6 / n


def allocate(fitset: FitSet, compute: float, cost: CostModel = COST_MODELS["linear"]) -> list[Allocation]:
    """Loss-optimal (N*, D*) for every fitted recipe at budget `compute` under `cost`."""
    if not compute > 0:
        raise ValueError(f"compute must be > 0 FLOPs, got {compute}")
    law = fitset.law_object()
    out = []
    for recipe in fitset.recipes:
        features = fitset.recipe_features.get(recipe, {})
        missing = [c for c in law.features if c not in features]
        if missing:
            raise ValueError(f"recipe {recipe!r} has no single value of {', '.join(missing)}, which {law.name} "
                             "needs to predict; fit runs whose precision columns are constant per recipe")
        p = fitset.fit_for(recipe).params_for(recipe)
        bits = cost.bits(recipe, features)
        mult = cost.multiplier(bits)
        flops = compute / mult
        if isinstance(law, Chinchilla):
            n, d = chinchilla_optimum(p, flops)
        else:
            n, d = numeric_optimum(law, p, {k: features[k] for k in law.features}, flops)
        x = {"N": np.array([n]), "D": np.array([d]), **{k: np.array([features[k]]) for k in law.features}}
        out.append(Allocation(recipe=recipe, compute=compute, bits=bits, cost_multiplier=mult,
                              n_params=n, tokens=d, loss=float(law.predict(p, x)[0])))
    return out


def best_precision(allocations: list[Allocation]) -> Allocation:
    """The recipe with the lowest predicted loss at its optimal allocation."""
    if not allocations:
        raise ValueError("no allocations to compare")
    return min(allocations, key=lambda a: a.loss)
