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

from lowprec.gemm.config import Recipe
from lowprec.gemm.dot_general import canonicalize
from lowprec.gemm.qgemm import matmul
from lowprec.numerics.quantize import quantize


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


def _reference_amax(history, current, recipe: Recipe):
    d = recipe.delayed
    past = jnp.max(history) if d.amax_compute == "max" else history[0]
    return jnp.where(past > 0, past, current) * (2.0**d.margin)


def _push(history, amax):
    return jnp.roll(history, 1).at[0].set(amax)


def _amax(x):
    return jnp.max(jnp.abs(x)).astype(jnp.float32)


def next_state(fwd_state: AmaxState, state_grad: AmaxState) -> AmaxState:
    """Combine the forward's updated x/w histories with the g history delivered as a gradient."""
    return AmaxState(x=fwd_state.x, w=fwd_state.w, g=state_grad.g)


def delayed_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *,
                        recipe: Recipe, state: AmaxState):
    """dot_general with per-tensor FP8 scales from amax histories; returns (out, state)."""
    if not isinstance(recipe, Recipe) or recipe.delayed is None:
        raise ValueError("delayed_dot_general needs a Recipe with delayed scaling (e.g. lowprec.recipes.get('fp8_delayed'))")
    if not isinstance(state, AmaxState):
        raise ValueError(f"state must be an AmaxState (see init_state), got {type(state).__name__}")
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    l, r, out_shape = canonicalize(lhs, rhs, dimension_numbers)
    out_dtype = jnp.dtype(preferred_element_type or jnp.result_type(lhs, rhs))
    ax, aw = _amax(l), _amax(r)
    ref_x, ref_w = _reference_amax(state.x, ax, recipe), _reference_amax(state.w, aw, recipe)
    out = _ddot(l, r, state.g, jax.lax.stop_gradient(ref_x), jax.lax.stop_gradient(ref_w), recipe, out_dtype, precision)
    new_state = AmaxState(x=_push(state.x, jax.lax.stop_gradient(ax)), w=_push(state.w, jax.lax.stop_gradient(aw)), g=state.g)
    return out.reshape(out_shape), new_state


def _q(x, spec, amax):
    return quantize(x, spec, axis=-1, amax=amax)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _ddot(l, r, g_hist, ref_x, ref_w, recipe, out_dtype, precision):
    f = recipe.fprop
    return matmul(_q(l, f.lhs.spec, ref_x), _q(r, f.rhs.spec, ref_w), f, precision, out_dtype)


def _ddot_fwd(l, r, g_hist, ref_x, ref_w, recipe, out_dtype, precision):
    return _ddot(l, r, g_hist, ref_x, ref_w, recipe, out_dtype, precision), (l, r, g_hist, ref_x, ref_w)


def _ddot_bwd(recipe, out_dtype, precision, res, g):
    l, r, g_hist, ref_x, ref_w = res
    ag = _amax(g)
    ref_g = _reference_amax(g_hist, ag, recipe)
    d, w = recipe.dgrad, recipe.wgrad
    rt, lt, gt = (jnp.swapaxes(t, -1, -2) for t in (r, l, g))
    dl = matmul(_q(g, d.lhs.spec, ref_g), _q(rt, d.rhs.spec, ref_w), d, precision, l.dtype)
    dr = matmul(_q(gt, w.lhs.spec, ref_g), _q(lt, w.rhs.spec, ref_x), w, precision, r.dtype)
    return dl, dr, _push(g_hist, ag), jnp.zeros_like(ref_x), jnp.zeros_like(ref_w)


_ddot.defvjp(_ddot_fwd, _ddot_bwd)
