"""The clipping estimator's mask, and the same mask packed one bit per element for the backward.

A clipped straight-through gradient passes where the forward operand v was not clipped:
|v| <= the format's largest value times v's block scale (`keep`). The forward pass stores that mask
packed (`pack`: 32 elements of the last axis per uint32 word, 1/16 of v in bf16), and the backward
unpacks it (`unpack`). The same functions run in XLA and inside the Pallas kernels.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

WORD = 32  # elements per packed word


def keep(values, bound):
    """|values| <= bound, bound [..., C / block] per block along values' last axis C: bool [..., C]."""
    c, blocks = values.shape[-1], bound.shape[-1]
    v = jnp.abs(values.astype(jnp.float32)).reshape(values.shape[:-1] + (blocks, c // blocks))
    return (v <= bound[..., None]).reshape(values.shape)


def pack(mask):
    """bool [..., C] (C a multiple of WORD) -> uint32 [..., C / WORD]; bit i of word j is element
    WORD·j + i (numpy's packbits with bitorder="little", read as little-endian words)."""
    m = mask.reshape(mask.shape[:-1] + (mask.shape[-1] // WORD, WORD)).astype(jnp.uint32)
    return jnp.sum(m << lax.iota(jnp.uint32, WORD), axis=-1, dtype=jnp.uint32)


def unpack(words):
    """`pack`'s inverse: uint32 [..., W] -> bool [..., W·WORD]."""
    bits = (words[..., None] >> lax.iota(jnp.uint32, WORD)) & jnp.uint32(1)
    return bits.astype(jnp.bool_).reshape(words.shape[:-1] + (words.shape[-1] * WORD,))
