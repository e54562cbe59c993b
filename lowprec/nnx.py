"""Quantized drop-ins for flax.nnx layers: `lowprec.nnx.Linear` and `lowprec.nnx.Einsum`.

Same constructor arguments as flax.nnx.Linear / Einsum plus `recipe=` (a name or a Recipe). Each
layer draws a uint32 stream id from `rngs.params()` after its own initializers (so its weights
equal the flax layer's for the same rngs) and keeps it as a `QuantId` variable; its GEMMs use
fold_in(step key from `lowprec.quant_key`, id). quantize_model leaves these layers as they are.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lowprec import recipes
from lowprec.integration.keys import layer_ident
from lowprec.integration.ops import QuantDot, QuantEinsum
from lowprec.integration.rules import Site


class QuantId(nnx.Variable):
    """A layer's random-stream id (not a parameter: optimizers and weight decay skip it)."""


def _site(layer: str, op: str, recipe, params: int) -> Site:
    recipe = recipes.get(recipe)
    return Site(path="", kind="layer", layer=layer, op=op, params=params, recipe=recipe)


def _stream_id(rngs: nnx.Rngs) -> QuantId:
    return QuantId(jax.random.bits(rngs.params(), (), jnp.uint32))


class Linear(nnx.Linear):
    """flax.nnx.Linear whose matmul is quantized by `recipe`."""

    def __init__(self, *args, recipe, rngs: nnx.Rngs, **kwargs):
        if "dot_general" in kwargs:
            raise ValueError("lowprec.nnx.Linear sets dot_general from recipe=; do not pass dot_general")
        super().__init__(*args, rngs=rngs, **kwargs)
        site = _site("Linear", "dot_general", recipe, self.kernel.size)
        self._lowprec_recipe = site.recipe
        self.dot_general = QuantDot(site)
        self.quant_id = _stream_id(rngs)

    def __call__(self, inputs, out_sharding=None):
        with layer_ident(self.quant_id[...]):
            return super().__call__(inputs, out_sharding=out_sharding)


class Einsum(nnx.Einsum):
    """flax.nnx.Einsum whose contractions are quantized by `recipe`."""

    def __init__(self, *args, recipe, rngs: nnx.Rngs, **kwargs):
        if "einsum_op" in kwargs:
            raise ValueError("lowprec.nnx.Einsum sets einsum_op from recipe=; do not pass einsum_op")
        super().__init__(*args, rngs=rngs, **kwargs)
        site = _site("Einsum", "einsum", recipe, self.kernel.size)
        self._lowprec_recipe = site.recipe
        self.einsum_op = QuantEinsum(site)
        self.quant_id = _stream_id(rngs)

    def __call__(self, inputs, einsum_str=None, out_sharding=None):
        with layer_ident(self.quant_id[...]):
            return super().__call__(inputs, einsum_str, out_sharding=out_sharding)
