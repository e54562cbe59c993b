"""FP8 delayed scaling as a functional op: amax histories go in and come out explicitly.

    y, state = delayed_dot_general(x, w, dn, recipe=recipe, state=state)

The forward histories (x, w) are updated in the returned state. The gradient's amax is only known
in the backward pass, so its history update is returned as the *cotangent* of `state.g`
(Flax's overwrite-with-gradient trick, made explicit): differentiate with respect to the state as
well and take `next_state(fwd_state, state_grad)`. The state must then bypass the optimizer and
gradient clipping: it is data, not a parameter.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from lowprec.gemm.config import DelayedScaling, Recipe
from lowprec.gemm.dot_general import canonicalize, qdot
from lowprec.numerics.quantize import tensor_amax


@functools.partial(jax.tree_util.register_dataclass, data_fields=["x", "w", "g"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class AmaxState:
    """Amax histories (newest first) of the activation, the weight and the output gradient."""

    x: jax.Array
    w: jax.Array
    g: jax.Array


def init_state(recipe: Recipe) -> AmaxState:
    if recipe.delayed is None:
        raise ValueError(f"recipe {recipe.name!r} has no delayed scaling (Recipe.delayed is None)")
    zeros = jnp.zeros((recipe.delayed.history,), jnp.float32)
    return AmaxState(x=zeros, w=zeros, g=zeros)


def _reference_amax(history, d: DelayedScaling):
    """The amax a history says to scale by, times 2^margin; 0 for an empty (all-zero) history, which
    makes the quantizer use the tensor's own amax: the first step is current scaling."""
    past = jnp.max(history) if d.amax_compute == "max" else history[0]
    return jnp.where(past > 0, past * (2.0**d.margin), 0.0)


def _push(history, amax):
    return jnp.roll(history, 1).at[0].set(amax)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _grad_reference(history, d):
    """_reference_amax of the gradient history; its backward turns the gradient's observed amax
    (qdot's cotangent for it) into the pushed history: the state's "gradient" is its next value."""
    return _reference_amax(history, d)


def _grad_reference_fwd(history, d):
    return _reference_amax(history, d), history


def _grad_reference_bwd(d, history, observed):
    return (_push(history, observed),)


_grad_reference.defvjp(_grad_reference_fwd, _grad_reference_bwd)


def next_state(fwd_state: AmaxState, state_grad: AmaxState) -> AmaxState:
    """Combine the forward's updated x/w histories with the g history delivered as a gradient."""
    return AmaxState(x=fwd_state.x, w=fwd_state.w, g=state_grad.g)


def delayed_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *,
                        recipe: Recipe, state: AmaxState):
    """dot_general with per-tensor FP8 scales from amax histories; returns (out, state).

    The GEMMs, the backward's reuse of the forward's codes and the output paths are those of
    current scaling (lowprec.gemm.dot_general.qdot); only the amaxes behind the scales differ.
    """
    if not isinstance(recipe, Recipe) or recipe.delayed is None:
        raise ValueError("delayed_dot_general needs a Recipe with delayed scaling (e.g. lowprec.recipes.get('fp8_delayed'))")
    if not isinstance(state, AmaxState):
        raise ValueError(f"state must be an AmaxState (see init_state), got {type(state).__name__}")
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    l, r, out_shape = canonicalize(lhs, rhs, dimension_numbers)
    out_dtype = jnp.dtype(preferred_element_type or jnp.result_type(lhs, rhs))
    d, sg = recipe.delayed, jax.lax.stop_gradient
    ref = (sg(_reference_amax(state.x, d)), sg(_reference_amax(state.w, d)), _grad_reference(state.g, d))
    out = qdot(l, r, None, ref, None, recipe, out_dtype, precision)
    ax, aw = sg(tensor_amax(l)), sg(tensor_amax(r))  # the same reductions as the quantizers': merged by XLA
    return out.reshape(out_shape), AmaxState(x=_push(state.x, ax), w=_push(state.w, aw), g=state.g)
