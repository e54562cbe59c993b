"""Token cross-entropy (+ z-loss) in f32 from logits kept in their own dtype, with a one-pass gradient.

Autodiff of `logsumexp(logits.astype(f32))` writes the gradient as an f32 [B, T, V] array (softmax
times the cotangent), scatter-adds the target term into it, then converts it to the logits' dtype:
three passes over the largest tensor of a small model's step. `_lse_and_picked` has its own VJP
that computes the same values and writes the gradient once, in the logits' dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _lse_parts(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(m, s) with logsumexp(x) = m + log(s): m the row max (0 where not finite), s = sum exp(x - m)."""
    m = jnp.max(x, axis=-1)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return m, jnp.sum(jnp.exp(x - m[..., None]), axis=-1)


def _forward(logits, targets):
    x = logits.astype(jnp.float32)
    m, s = _lse_parts(x)
    picked = jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
    return (m + jnp.log(s), picked), (m, s)


@jax.custom_vjp
def _lse_and_picked(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per token, f32 [B, T]: logsumexp over the vocabulary and the target's logit."""
    return _forward(logits, targets)[0]


def _fwd(logits, targets):
    out, (m, s) = _forward(logits, targets)
    return out, (logits, targets, m, s)


def _bwd(res, cotangents):
    """d logits = exp(x - m)·(g_lse / s) + (g_picked at the target, else 0): autodiff's f32 arithmetic
    for m + log(s) with m held constant and for the gather, fused into one pass, rounded once."""
    logits, targets, m, s = res
    g_lse, g_picked = cotangents
    soft = jnp.exp(logits.astype(jnp.float32) - m[..., None]) * (g_lse / s)[..., None]
    is_target = targets[..., None] == jnp.arange(logits.shape[-1], dtype=targets.dtype)
    return (soft + jnp.where(is_target, g_picked[..., None], 0.0)).astype(logits.dtype), None


_lse_and_picked.defvjp(_fwd, _bwd)


def cross_entropy(logits: jax.Array, targets: jax.Array, z_loss: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """(objective, ce): token-mean cross-entropy in f32, objective adds z_loss·mean(logsumexp²).

    logits [B, T, V] (any float dtype; the gradient comes back in it), targets int [B, T] in [0, V).
    """
    lse, picked = _lse_and_picked(logits, targets)
    ce = jnp.mean(lse - picked)
    return ce + z_loss * jnp.mean(lse**2), ce
