"""An input's gradient from its rotated, clipped operand's gradient in one pass (Pallas on GPUs).

With a forward Hadamard and a clipping estimator (Quartet), a backward GEMM gives the gradient of
the rotated operand v, float32 [B, T, C]; the input's gradient is that times the estimator's mask
(`clip_mask.keep`, which the forward pass stored packed, one bit per element) and rotated back by
Rᵀ along C. XLA writes the masked float32 gradient (4 bytes per element, at copy speed) and then
rotates it in a GEMM fusion of its own. `masked_inverse` reads the gradient and the mask's words
per tile, masks, rotates (a float32 product per block, IEEE on GPUs) and stores the gradient in its
final dtype.

Same arithmetic as `reference` (mask, multiply, `inverse_hadamard`, cast) tile by tile, up to the
order of each block's float32 sums, which a GPU test checks.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lowprec.gemm import clip_mask, tiles
from lowprec.numerics import fused
from lowprec.transforms.hadamard import HadamardSpec, inverse_hadamard, rotation_matrix


def fits(shape: tuple[int, ...], grad_dtype, hadamard: HadamardSpec | None) -> bool:
    """Whether the kernel computes this gradient: float32 [..., T, C] whose tiles divide T and C, and a
    matmul rotation of 16 to 64 along C."""
    return (hadamard is not None and hadamard.impl == "matmul" and 16 <= hadamard.size <= tiles.TILE
            and len(shape) >= 2 and jnp.dtype(grad_dtype) == jnp.float32
            and shape[-2] % tiles.TILE == 0 and shape[-1] % tiles.TILE == 0)


def reference(grad, keep_bits, hadamard: HadamardSpec, key, out_dtype, *, transpose: bool = False):
    """grad [..., T, C] times the mask packed in keep_bits (uint32 [..., T, C / 32], `clip_mask.pack`),
    rotated back along C, in out_dtype (and transposed to [..., C, T]): the composition the kernel
    replaces, and its definition."""
    out = inverse_hadamard(grad * clip_mask.unpack(keep_bits), hadamard, axis=-1, key=key).astype(out_dtype)
    return jnp.swapaxes(out, -1, -2) if transpose else out


def _tile(g, keep_bits, rt, *, out_dtype, transpose: bool):
    """g [T, C] float32, keep_bits [T, C / 32] uint32, rt [h, h] float32 Rᵀ -> [T, C] (or [C, T]) out_dtype."""
    t, c = g.shape
    gm = (g * clip_mask.unpack(keep_bits)).reshape(-1, rt.shape[0])
    y = jnp.dot(gm, rt, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32).reshape(t, c)
    return (y.T if transpose else y).astype(out_dtype)


def _kernel(g_ref, rt_ref, bits_ref, out_ref, **static):
    out_ref[...] = _tile(g_ref[...], bits_ref[...], rt_ref[...], **static)


def _pallas(g, rt, keep_bits, *, out_dtype, transpose, interpret=False):
    b, t, c = g.shape
    return tiles.tiled_call(
        functools.partial(_kernel, out_dtype=out_dtype, transpose=transpose), g, rt, keep_bits,
        extra_specs=[tiles.tile_spec(tiles.TILE // clip_mask.WORD)], out_spec=tiles.tile_spec(transpose=transpose),
        out_shape=jax.ShapeDtypeStruct((b, c, t) if transpose else (b, t, c), out_dtype), interpret=interpret)


def _xla(g, rt, keep_bits, **static):
    """The kernel's arithmetic on whole [T, C] slices (backends without the Pallas kernel)."""
    return jax.vmap(functools.partial(_tile, rt=rt, **static))(g, keep_bits)


@functools.cache
def _op(out_dtype, transpose: bool, interpret: bool):
    """The kernel as a partitioned op: the gradient and the mask's words sharded alike (the words as
    C), the output too (T's and C's swapped when transposed), the rotation replicated."""
    out, out_rule = ("bct", "b (c k) t") if transpose else ("btc", "b t (c k)")
    return tiles.partitioned(_pallas, _xla, dict(out_dtype=out_dtype, transpose=transpose), interpret, out,
                             ("", "btc"), f"b t (c k), r q, b t c -> {out_rule}", ("k", "r", "q"),
                             k=clip_mask.WORD)


def masked_inverse(grad, keep_bits, hadamard: HadamardSpec, key, out_dtype, *, transpose: bool = False,
                   interpret: bool = False):
    """`reference(grad, keep_bits, hadamard, key, out_dtype, transpose=transpose)` for grad [..., T, C]
    where `fits`: the Pallas kernel on CUDA devices with Pallas's Triton backend (anywhere with
    interpret=True, for tests), the same arithmetic in XLA on other backends, the composition itself
    without Triton. transpose: the gradient of a tensor stored transposed (a weight [K, N] whose
    canonical operand is [N, K]), written in the layout its consumer (the optimizer) reads."""
    t, c = grad.shape[-2:]
    words = grad.shape[:-1] + (c // clip_mask.WORD,)
    if not (fits(grad.shape, grad.dtype, hadamard) and keep_bits.shape == words and keep_bits.dtype == jnp.uint32):
        raise ValueError(f"masked_inverse: no kernel for a {jnp.dtype(grad.dtype).name} {tuple(grad.shape)} "
                         f"gradient with {jnp.dtype(keep_bits.dtype).name} {tuple(keep_bits.shape)} mask words "
                         f"(needs uint32 {words}) and hadamard={hadamard}; check fits() first")
    if not interpret and fused.triton() is None:
        return reference(grad, keep_bits, hadamard, key, out_dtype, transpose=transpose)
    rt = rotation_matrix(hadamard, length=c, key=key, transpose=True)
    out = _op(jnp.dtype(out_dtype), transpose, interpret)(
        grad.reshape(-1, t, c), rt, keep_bits.reshape(-1, t, c // clip_mask.WORD))
    return out.reshape(grad.shape[:-2] + ((c, t) if transpose else (t, c)))
