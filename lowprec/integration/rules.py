"""Quantization rules (path regex -> recipe, first match wins) and the sites they apply to.

A site is one place where matmuls happen, named by its module path ("blocks/3/mlp/up_proj"):
  layer      nnx.Linear / LinearGeneral / Einsum (linen Dense / DenseGeneral / Einsum): op
             "dot_general" (Linear, Dense, LinearGeneral, DenseGeneral) or "einsum" (Einsum).
  raw        a user module that owns parameters directly: the jnp.einsum / jnp.matmul /
             lax.dot_general calls in its own __call__ (op "einsum" or "dot_general").
  attention  a module that owns no parameters (attention score/value products, MultiHeadAttention's
             attention_fn): activation x activation matmuls, quantized only by a rule that lists
             op "attention" explicitly, so a catch-all ".*" never touches them.
"""
from __future__ import annotations

import dataclasses
import re

from lowprec import recipes
from lowprec.gemm.config import Recipe

OPS = ("dot_general", "einsum", "attention")
KINDS = ("layer", "raw", "attention")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """Quantize the sites whose path matches `path` (re.search) and whose op is in `ops` with `recipe`."""

    path: str
    recipe: str | Recipe
    ops: tuple = ("dot_general", "einsum")

    def __post_init__(self):
        if not isinstance(self.path, str):
            raise ValueError(f"Rule.path must be a regex string, got {type(self.path).__name__}")
        try:
            re.compile(self.path)
        except re.error as err:
            raise ValueError(f"Rule.path {self.path!r} is not a valid regex: {err}") from None
        object.__setattr__(self, "recipe", recipes.get(self.recipe))
        ops = (self.ops,) if isinstance(self.ops, str) else tuple(self.ops)
        bad = [op for op in ops if op not in OPS]
        if bad or not ops:
            raise ValueError(f"Rule.ops must be a non-empty tuple from {OPS}, got {self.ops!r}")
        object.__setattr__(self, "ops", ops)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Site:
    """One quantizable site and what the rules decided for it (recipe None: no rule matched)."""

    path: str
    kind: str
    layer: str  # class name, e.g. "Linear"
    op: str  # "dot_general" | "einsum" for layers; "raw" / "attention" sites cover several
    params: int  # parameters used in its matmuls (FLOPs per token ~ 2 x params)
    rule: int | None = None
    recipe: Recipe | None = None
    ops: tuple = ()  # raw ops this site quantizes: subset of ("dot_general", "einsum")

    @property
    def quantized(self) -> bool:
        return self.recipe is not None and self.recipe.active


def as_rules(rules) -> tuple[Rule, ...]:
    """A recipe name / Recipe means [Rule(path=".*", recipe=it)]; otherwise a sequence of Rules."""
    if isinstance(rules, (str, Recipe)):
        return (Rule(path=".*", recipe=rules),)
    if isinstance(rules, Rule):
        return (rules,)
    rules = tuple(rules)
    bad = [r for r in rules if not isinstance(r, Rule)]
    if bad or not rules:
        raise ValueError(f"rules must be a recipe name, a Recipe, or a non-empty list of lowprec.Rule, got {bad or rules!r}")
    return rules


def _applies(rule: Rule, site: Site) -> bool:
    if site.kind == "attention":
        return "attention" in rule.ops
    if site.kind == "layer":
        return site.op in rule.ops
    return any(op in rule.ops for op in ("dot_general", "einsum"))


def assign(sites, rules: tuple[Rule, ...]) -> list[Site]:
    """Each site with its first matching rule (order of `rules`), recipe and quantized raw ops.
    Sites that already carry a recipe (lowprec.nnx layers) keep it."""
    out = []
    for site in sites:
        for i, rule in enumerate(rules if site.recipe is None else ()):
            if _applies(rule, site) and re.search(rule.path, site.path):
                ops = ("dot_general", "einsum") if site.kind == "attention" else tuple(
                    op for op in ("dot_general", "einsum") if op in rule.ops)
                site = dataclasses.replace(site, rule=i, recipe=rule.recipe, ops=ops)
                break
        out.append(site)
    return out


def unused_rules(sites, rules: tuple[Rule, ...]) -> list[int]:
    used = {s.rule for s in sites}
    return [i for i in range(len(rules)) if i not in used]
