"""From PrecisionConfig to quantization rules, the quantized model, and the per-step quant key scope.

Layers kept in high precision follow recipes.md: the lm_head always (the embedding is a lookup,
not a matmul, and a tied output projection runs in nnx.Embed.attend, which is never quantized),
plus the linears of the first/last blocks for recipes that need them. NVFP4 kept the first 2 +
last 8 of 62 blocks at 12B; the default keeps the same fractions of the model's depth, rounded
half up (12 blocks: last 2; 24 blocks: first 1 + last 3; 2 blocks: none).
Override with precision.keep_first_blocks / keep_last_blocks.
"""
from __future__ import annotations

import contextlib
import math

import jax
from flax import nnx

from lowprec import recipes
from lowprec.integration import Rule, describe, quant_key, quantize_model
from lowprec.train.config import PrecisionConfig

BF16 = "bf16"
# recipe name prefix (so ablations such as nvfp4_no_rht match) -> (first, last) fraction of blocks kept
KEEP_BLOCK_FRACTIONS: dict[str, tuple[float, float]] = {"nvfp4": (2 / 62, 8 / 62)}


def check_recipe(p: PrecisionConfig) -> None:
    """Raise ValueError naming the choices unless p.recipe is a registered (or generic fp_*) recipe."""
    try:
        recipes.get(p.recipe)
    except ValueError as err:
        raise ValueError(f"precision.recipe: {err}") from None


def keep_blocks(p: PrecisionConfig, n_layers: int) -> tuple[int, int]:
    """(first, last) numbers of blocks kept in BF16; None fields take KEEP_BLOCK_FRACTIONS of n_layers."""
    fractions = next((f for prefix, f in KEEP_BLOCK_FRACTIONS.items() if p.recipe.startswith(prefix)), (0.0, 0.0))
    first, last = (math.floor(f * n_layers + 0.5) if given is None else given
                   for f, given in zip(fractions, (p.keep_first_blocks, p.keep_last_blocks)))
    return min(first, n_layers), min(last, n_layers)


def layer_rules(p: PrecisionConfig, n_layers: int) -> list[tuple[str, str]]:
    """(path regex, recipe) pairs, first match wins: the BF16 keep-list, kept blocks, then the rest."""
    if p.recipe == BF16:
        return [(".*", BF16)]
    first, last = keep_blocks(p, n_layers)
    kept = sorted(set(range(first)) | set(range(n_layers - last, n_layers)))
    rules = [(pattern, BF16) for pattern in p.keep_bf16]
    rules += [(f"^blocks/{i}/.*$", BF16) for i in kept]
    return rules + [(".*", p.recipe)]


def apply_precision(model: nnx.Module, p: PrecisionConfig, n_layers: int) -> nnx.Module:
    """The model with its linears quantized per layer_rules (unchanged for the bf16 recipe)."""
    if p.recipe == BF16:
        return model
    check_recipe(p)
    return quantize_model(model, [Rule(path=path, recipe=recipe) for path, recipe in layer_rules(p, n_layers)])


def describe_precision(model: nnx.Module, p: PrecisionConfig) -> str | None:
    """lowprec.describe's table of which recipe each linear runs (None for bf16)."""
    return None if p.recipe == BF16 else describe(model)


def quant_scope(p: PrecisionConfig, key: jax.Array):
    """Context that hands `key` to the quantized layers (nothing to do for bf16)."""
    return contextlib.nullcontext() if p.recipe == BF16 else quant_key(key)
