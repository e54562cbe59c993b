"""Fit results as plain frozen records, with a lossless JSON round trip (fit.json).

A `FitSet` holds one `LawFit` per group: the single group "all", or one per recipe with
`by="recipe"`. A `LawFit` has a `shared` stage (for staged laws: the base fitted on the baseline
recipe, then frozen) and, for staged laws, one efficiency stage per non-baseline recipe.
Per-recipe efficiencies are named like `effN[mxfp4]` in the flattened parameter view.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lowprec.fits.laws import Law, get_law
from lowprec.fits.table import Exclusion

ALL = "all"


@dataclass(frozen=True, kw_only=True)
class StageFit:
    """One optimization: fitted values, values held fixed, bootstrap CIs and how it was run."""

    params: dict[str, float]
    fixed: dict[str, float]
    ci: dict[str, tuple[float, float]]
    objective: float
    n_points: int
    grid_size: int
    best_start: int
    n_bootstrap: int


@dataclass(frozen=True, kw_only=True)
class LawFit:
    """A law fitted to one group of runs."""

    recipes: tuple[str, ...]
    staged: bool
    shared: StageFit
    efficiency: dict[str, StageFit] = field(default_factory=dict)
    residuals: dict[str, Any] = field(default_factory=dict)

    def params_for(self, recipe: str) -> dict[str, float]:
        """Every parameter the law needs for `recipe` (efficiencies default to 1 for the baseline)."""
        if recipe not in self.recipes:
            raise ValueError(f"recipe {recipe!r} not in this fit; fitted recipes: {', '.join(self.recipes)}")
        out = self.shared.fixed | self.shared.params
        stage = self.efficiency.get(recipe)
        if stage is not None:
            out |= stage.fixed | stage.params
        return out

    def flat_params(self) -> dict[str, float]:
        """Shared parameters plus `name[recipe]` for every fitted efficiency."""
        out = dict(self.shared.params)
        for recipe, stage in self.efficiency.items():
            out |= {f"{k}[{recipe}]": v for k, v in stage.params.items()}
        return out

    def flat_ci(self) -> dict[str, tuple[float, float]]:
        out = dict(self.shared.ci)
        for recipe, stage in self.efficiency.items():
            out |= {f"{k}[{recipe}]": v for k, v in stage.ci.items()}
        return out

    @property
    def objective(self) -> float:
        return self.shared.objective + sum(s.objective for s in self.efficiency.values())


@dataclass(frozen=True, kw_only=True)
class FitSet:
    """Everything `lowprec fit` produces, and everything `lowprec predict` needs."""

    law: str
    law_options: dict[str, Any]
    by: str | None
    baseline: str | None
    config: dict[str, Any]
    fits: dict[str, LawFit]
    exclusions: tuple[Exclusion, ...]
    recipe_features: dict[str, dict[str, float]]

    def law_object(self) -> Law:
        return get_law(self.law, **self.law_options)

    def fit_for(self, recipe: str) -> LawFit:
        """The group fit that covers `recipe`."""
        key = recipe if self.by == "recipe" else ALL
        if key not in self.fits or recipe not in self.fits[key].recipes:
            raise ValueError(f"recipe {recipe!r} not fitted; fitted recipes: {', '.join(self.recipes)}")
        return self.fits[key]

    @property
    def recipes(self) -> tuple[str, ...]:
        return tuple(r for f in self.fits.values() for r in f.recipes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name, lf in self.fits.items():
            d["fits"][name] |= {"params_flat": lf.flat_params(), "ci_flat": lf.flat_ci(), "objective": lf.objective,
                                "base": d["fits"][name]["shared"] if lf.staged else None}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitSet:
        def stage(s: Mapping[str, Any]) -> StageFit:
            return StageFit(**(dict(s) | {"ci": {k: tuple(v) for k, v in s["ci"].items()}}))

        fits = {
            name: LawFit(recipes=tuple(f["recipes"]), staged=f["staged"], shared=stage(f["shared"]),
                         efficiency={r: stage(s) for r, s in f["efficiency"].items()}, residuals=f["residuals"])
            for name, f in d["fits"].items()
        }
        return cls(law=d["law"], law_options=d["law_options"], by=d["by"], baseline=d["baseline"],
                   config=d["config"], fits=fits, exclusions=tuple(Exclusion(**e) for e in d["exclusions"]),
                   recipe_features=d["recipe_features"])


def write_fit_json(fitset: FitSet, path: str | Path) -> None:
    Path(path).write_text(json.dumps(fitset.to_dict(), indent=2) + "\n")


def read_fit_json(path: str | Path) -> FitSet:
    d = json.loads(Path(path).read_text())
    for key in ("law", "law_options", "by", "fits", "exclusions", "recipe_features"):
        if key not in d:
            raise ValueError(f"{path}: not a lowprec fit.json (key {key!r} missing)")
    return FitSet.from_dict(d)
