"""FP8 delayed scaling in NNX models: amax histories as variables of the quantized layer.

quantize_model gives a layer whose recipe has `delayed` a DelayedDot (or DelayedEinsum) as its
dot_general (einsum_op): a small module holding the layer's three histories, newest first,
  amax_x, amax_w  AmaxHistory      written back by the forward pass (the model state after the call)
  amax_g          GradAmaxHistory  the new history arrives as its gradient (lowprec.gemm.delayed):
                                   differentiate with respect to it and replace it by that gradient.
Neither is an nnx.Param, so optimizers built with wrt=nnx.Param never see them; lowprec.train
differentiates Params and GradAmaxHistory leaves and routes each where it belongs.

A layer must run its GEMM once per forward pass: the gradients of two uses of one amax_g would
add up. Inside a `lowprec.quant_key` scope (the train step always opens one) a second call raises.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lowprec.gemm.delayed import AmaxState, delayed_dot_general, init_state
from lowprec.integration.einsum import einsum_via_dot_general
from lowprec.integration.keys import count_call
from lowprec.integration.ops import site_dot_general
from lowprec.integration.rules import Site


class AmaxHistory(nnx.Variable):
    """Amax history (newest first) of a delayed-scaling GEMM's activation or weight; the forward writes it."""


class GradAmaxHistory(nnx.Variable):
    """Amax history (newest first) of a delayed-scaling GEMM's output gradient; its gradient is its next value."""


def delayed_sites(sites) -> list[Site]:
    """The sites a rule gave a delayed-scaling recipe."""
    return [s for s in sites if s.rule is not None and s.quantized and s.recipe.delayed is not None]


def check_sites(sites) -> None:
    """Delayed scaling keeps one history per operand of one GEMM: only layer sites qualify."""
    bad = [f"{s.path or '(root)'} [{s.kind}]" for s in delayed_sites(sites) if s.kind != "layer"]
    if bad:
        raise ValueError(f"delayed-scaling recipes apply to Linear / LinearGeneral / Einsum layers only, but rules give "
                         f"one to {', '.join(bad)}; give those sites a current-scaling recipe with an earlier Rule")


class DelayedDot(nnx.Module):
    """jax.lax.dot_general's signature, quantized with `site`'s delayed-scaling recipe and amax histories."""

    def __init__(self, site: Site):
        state = init_state(site.recipe)
        self.site = site
        # each history its own buffer (copies of init_state's one zeros array): a train step donates its state
        self.amax_x, self.amax_w = AmaxHistory(jnp.array(state.x)), AmaxHistory(jnp.array(state.w))
        self.amax_g = GradAmaxHistory(jnp.array(state.g))

    def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
        if count_call(("delayed", id(self))):
            raise ValueError(f"layer {self.site.path or '(unnamed)'!r} ran its delayed-scaling GEMM twice in one forward "
                             "pass; its amax_g gradients would add up. Give shared layers a current-scaling recipe")
        state = AmaxState(x=self.amax_x[...], w=self.amax_w[...], g=self.amax_g[...])
        updated = []

        def gemm(lhs, rhs, dn, precision, preferred_element_type):
            out, new = delayed_dot_general(lhs, rhs, dn, precision, preferred_element_type,
                                           recipe=self.site.recipe, state=state)
            updated.append(new)
            return out

        out = site_dot_general(self.site, lhs, rhs, dimension_numbers, precision, preferred_element_type,
                               out_sharding, gemm=gemm)
        self.amax_x[...], self.amax_w[...] = updated[0].x, updated[0].w
        return out


class DelayedEinsum(DelayedDot):
    """jnp.einsum's signature (two operands), its contraction run by DelayedDot."""

    def __call__(self, subscripts, *operands, **kwargs):
        if len(operands) != 2:
            raise ValueError(f"einsum at {self.site.path!r}: delayed scaling takes exactly two operands, got {len(operands)}")
        return einsum_via_dot_general(super().__call__, subscripts, *operands, **kwargs)
