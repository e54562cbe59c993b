"""PNG plots of a fit (matplotlib, Agg backend): loss vs D, loss vs compute, efficiencies, residuals."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lowprec.fits.fitter import log_residuals  # noqa: E402
from lowprec.fits.predict import numeric_optimum  # noqa: E402
from lowprec.fits.results import FitSet  # noqa: E402
from lowprec.fits.table import RunsTable  # noqa: E402

MAX_CURVES = 6


def _features(fitset: FitSet, recipe: str) -> dict[str, float] | None:
    """The recipe's constant precision features the law needs, or None if they vary."""
    feats = fitset.recipe_features.get(recipe, {})
    needed = fitset.law_object().features
    return {k: feats[k] for k in needed} if all(k in feats for k in needed) else None


def _curve_ns(n: np.ndarray) -> np.ndarray:
    distinct = np.unique(n)
    if len(distinct) <= MAX_CURVES:
        return distinct
    return distinct[np.round(np.linspace(0, len(distinct) - 1, MAX_CURVES)).astype(int)]


def loss_vs_tokens(fitset: FitSet, table: RunsTable, path: Path) -> None:
    """One panel per recipe: runs coloured by N, fitted curves at representative N."""
    law, recipes = fitset.law_object(), table.recipes
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.5 * len(recipes), 4), squeeze=False, sharey=True)
    all_n = table.array("n_params")
    norm = matplotlib.colors.LogNorm(all_n.min(), all_n.max() * (1 + 1e-9))
    for ax, recipe in zip(axes[0], recipes):
        x = table.select(recipe).data()
        ax.scatter(x["D"], x["L"], c=x["N"], norm=norm, cmap="viridis", s=14)
        feats = _features(fitset, recipe)
        if feats is not None:
            p = fitset.fit_for(recipe).params_for(recipe)
            d = np.geomspace(x["D"].min() / 1.5, x["D"].max() * 1.5, 100)
            for n in _curve_ns(x["N"]):
                xd = {"N": np.full_like(d, n), "D": d, **{k: np.full_like(d, v) for k, v in feats.items()}}
                ax.plot(d, law.predict(p, xd), color=plt.cm.viridis(norm(n)), lw=1)
        ax.set(xscale="log", yscale="log", xlabel="tokens D", title=recipe)
    axes[0][0].set_ylabel("final loss")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes[0].tolist(), label="N (params)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_vs_compute(fitset: FitSet, table: RunsTable, path: Path) -> None:
    """Runs against 6ND, with each recipe's compute-optimal frontier (flat cost model)."""
    law = fitset.law_object()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, recipe in enumerate(table.recipes):
        x = table.select(recipe).data()
        color = f"C{i % 10}"
        c = 6 * x["N"] * x["D"]
        ax.scatter(c, x["L"], s=12, color=color, label=recipe)
        feats = _features(fitset, recipe)
        if feats is not None:
            p = fitset.fit_for(recipe).params_for(recipe)
            grid = np.geomspace(c.min() / 2, c.max() * 2, 30)
            ax.plot(grid, [_frontier_loss(law, p, feats, g) for g in grid], color=color, lw=1)
    ax.set(xscale="log", yscale="log", xlabel="compute 6ND (FLOPs)", ylabel="final loss",
           title=f"{fitset.law}: runs and compute-optimal frontier at C = 6ND")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _frontier_loss(law, p, feats, flops) -> float:
    n, d = numeric_optimum(law, p, feats, flops)
    x = {"N": np.array([n]), "D": np.array([d]), **{k: np.array([v]) for k, v in feats.items()}}
    return float(law.predict(p, x)[0])


def efficiencies(fitset: FitSet, path: Path) -> None:
    """Per-recipe efficiencies with bootstrap error bars (staged laws only)."""
    fit = next(iter(fitset.fits.values()))
    names = [e.name for e in fitset.law_object().efficiencies]
    recipes = [fitset.baseline, *fit.efficiency]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(recipes)), 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        vals, lows, highs = [], [], []
        for r in recipes:
            v = fit.params_for(r)[name]
            lo, hi = fit.efficiency[r].ci.get(name, (v, v)) if r in fit.efficiency else (v, v)
            vals.append(v)
            lows.append(lo)
            highs.append(hi)
        pos = np.arange(len(recipes)) + (j - (len(names) - 1) / 2) * width
        ax.bar(pos, vals, width, label=name)
        ax.vlines(pos, lows, highs, color="k", lw=1.5)  # bootstrap CI (need not contain the estimate)
    ax.set_xticks(np.arange(len(recipes)), recipes, rotation=30, ha="right")
    ax.set(ylabel="efficiency", title=f"{fitset.law}: efficiency per recipe (baseline {fitset.baseline} = 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def residuals(fitset: FitSet, table: RunsTable, path: Path) -> None:
    """log Lhat - log L against the observed loss, per recipe."""
    law = fitset.law_object()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, recipe in enumerate(table.recipes):
        sub = table.select(recipe)
        ax.scatter(sub.array(sub.loss_column), log_residuals(law, fitset.fit_for(recipe), sub),
                   s=12, color=f"C{i % 10}", label=recipe)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="observed loss", ylabel="log L̂ − log L", title=f"{fitset.law}: residuals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(fitset: FitSet, table: RunsTable, out: Path) -> list[Path]:
    """All plots that apply to this fit; returns the files written."""
    paths = [out / "loss_vs_tokens.png", out / "loss_vs_compute.png", out / "residuals.png"]
    loss_vs_tokens(fitset, table, paths[0])
    loss_vs_compute(fitset, table, paths[1])
    residuals(fitset, table, paths[2])
    if fitset.law_object().efficiencies:
        paths.append(out / "efficiencies.png")
        efficiencies(fitset, paths[-1])
    return paths
