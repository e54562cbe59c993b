"""Plain-text tables of recipes and specs, for the CLI and for the golden-string test."""
from __future__ import annotations

from lowprec.gemm.config import GemmConfig, Recipe


def _hadamard(cfg: GemmConfig) -> str:
    h = cfg.hadamard
    if h is None:
        return "-"
    size = "full" if h.size == 0 else str(h.size)
    signs = "" if h.signs == "none" else f" {h.signs}" + ("" if h.sign_side == "left" else " H·D")
    return f"RHT-{size}{signs}"


def recipe_rows(recipe: Recipe) -> list[tuple[str, ...]]:
    """(recipe, role, lhs, rhs, transform, estimator) rows; roles read fprop X·W, dgrad dY·Wᵀ, wgrad dYᵀ·X."""
    rows = []
    for role, cfg in recipe.roles.items():
        extra = f", delayed amax[{recipe.delayed.history}] {recipe.delayed.amax_compute}" if recipe.delayed else ""
        rows.append((recipe.name, role, cfg.lhs.describe(), cfg.rhs.describe(), _hadamard(cfg),
                     recipe.estimator + extra if role == "fprop" else ""))
    return rows


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def recipes_table(recipes: list[Recipe]) -> str:
    rows = [row for r in recipes for row in recipe_rows(r)]
    return format_table(rows, ("recipe", "gemm", "lhs (X | dY)", "rhs (W | X)", "transform", "estimator"))
