"""An input's gradient from its rotated, clipped operand's gradient in one pass (Pallas on GPUs).

With a forward Hadamard and a clipping estimator (Quartet), a backward GEMM gives the gradient of
the rotated operand v, float32 [B, T, C]; the input's gradient is that times the estimator's mask
(|v| <= the format's largest value times v's block scale) and rotated back by Rᵀ along C. XLA writes
the masked float32 gradient (4 bytes per element, at copy speed) and then rotates it in a GEMM fusion
of its own. `masked_inverse` reads the gradient, v and the block bounds per tile, masks, rotates
(a float32 product per block, IEEE on GPUs) and stores the gradient in its final dtype.

Same arithmetic as `reference` (mask, multiply, `inverse_hadamard`, cast) tile by tile, up to the
order of each block's float32 sums, which a GPU test checks.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lowprec.gemm import tiles
from lowprec.numerics import fused
from lowprec.transforms.hadamard import HadamardSpec, inverse_hadamard, rotation_matrix


def fits(shape: tuple[int, ...], grad_dtype, values_dtype, block: int, hadamard: HadamardSpec | None) -> bool:
    """Whether the kernel computes this gradient: float32 [..., T, C] whose tiles divide T and C, bf16
    values, mask blocks of `block` and a matmul rotation of 16 to 64 along C."""
    return (hadamard is not None and hadamard.impl == "matmul" and 16 <= hadamard.size <= tiles.TILE
            and tiles.TILE % block == 0 and len(shape) >= 2
            and jnp.dtype(grad_dtype) == jnp.float32 and jnp.dtype(values_dtype) == jnp.bfloat16
            and shape[-2] % tiles.TILE == 0 and shape[-1] % tiles.TILE == 0)


def keep(values, bound):
    """The clipping estimator's mask: |values| <= bound, bound [..., C / block] per block along C."""
    block = values.shape[-1] // bound.shape[-1]
    return jnp.abs(values.astype(jnp.float32)) <= jnp.repeat(bound, block, axis=-1)


def reference(grad, values, bound, hadamard: HadamardSpec, key, out_dtype, *, transpose: bool = False):
    """grad [..., T, C] times keep(values, bound), rotated back along C, in out_dtype (and transposed to
    [..., C, T]): the composition the kernel replaces, and its definition."""
    out = inverse_hadamard(grad * keep(values, bound), hadamard, axis=-1, key=key).astype(out_dtype)
    return jnp.swapaxes(out, -1, -2) if transpose else out


def _tile(g, v, bound, rt, *, out_dtype, transpose: bool):
    """g [T, C] float32, v [T, C], bound [T, C / block], rt [h, h] float32 Rᵀ -> [T, C] (or [C, T])
    out_dtype."""
    t, c = g.shape
    blocks = bound.shape[-1]
    mask = jnp.abs(v.astype(jnp.float32)).reshape(t, blocks, c // blocks) <= bound[..., None]
    gm = (g.reshape(t, blocks, c // blocks) * mask).reshape(-1, rt.shape[0])
    y = jnp.dot(gm, rt, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32).reshape(t, c)
    return (y.T if transpose else y).astype(out_dtype)


def _kernel(g_ref, rt_ref, v_ref, bound_ref, out_ref, **static):
    out_ref[...] = _tile(g_ref[...], v_ref[...], bound_ref[...], rt_ref[...], **static)


def _pallas(g, rt, v, bound, *, out_dtype, transpose, interpret=False):
    b, t, c = g.shape
    return tiles.tiled_call(
        functools.partial(_kernel, out_dtype=out_dtype, transpose=transpose), g, rt, v, bound,
        extra_specs=[tiles.tile_spec(), tiles.tile_spec(tiles.TILE * bound.shape[-1] // c)],
        out_spec=tiles.tile_spec(transpose=transpose),
        out_shape=jax.ShapeDtypeStruct((b, c, t) if transpose else (b, t, c), out_dtype), interpret=interpret)


def _xla(g, rt, v, bound, **static):
    """The kernel's arithmetic on whole [T, C] slices (backends without the Pallas kernel)."""
    return jax.vmap(functools.partial(_tile, rt=rt, **static))(g, v, bound)


@functools.cache
def _op(block: int, out_dtype, transpose: bool, interpret: bool):
    """The kernel as a partitioned op: the gradient, values and bounds sharded alike (the bounds'
    blocks as C), the output too (T's and C's swapped when transposed), the rotation replicated."""
    out, out_rule = ("bct", "b (c k) t") if transpose else ("btc", "b t (c k)")
    return tiles.partitioned(_pallas, _xla, dict(out_dtype=out_dtype, transpose=transpose), interpret, out,
                             ("", "btc", "btc"), f"b t (c k), r q, b t (c k), b t c -> {out_rule}", ("k", "r", "q"),
                             k=block)


def masked_inverse(grad, values, bound, hadamard: HadamardSpec, key, out_dtype, *, transpose: bool = False,
                   interpret: bool = False):
    """`reference(grad, values, bound, hadamard, key, out_dtype, transpose=transpose)` for grad
    [..., T, C] where `fits`: the Pallas kernel on CUDA devices with Pallas's Triton backend (anywhere
    with interpret=True, for tests), the same arithmetic in XLA on other backends, the composition
    itself without Triton. transpose: the gradient of a tensor stored transposed (a weight [K, N]
    whose canonical operand is [N, K]), written in the layout its consumer (the optimizer) reads."""
    block = values.shape[-1] // bound.shape[-1]
    shapes_agree = (values.shape == grad.shape and bound.shape[:-1] == grad.shape[:-1]
                    and block * bound.shape[-1] == grad.shape[-1])
    if not (shapes_agree and fits(grad.shape, grad.dtype, values.dtype, block, hadamard)):
        raise ValueError(f"masked_inverse: no kernel for a {jnp.dtype(grad.dtype).name} {tuple(grad.shape)} "
                         f"gradient with {jnp.dtype(values.dtype).name} {tuple(values.shape)} values, bounds "
                         f"{tuple(bound.shape)} and hadamard={hadamard}; check fits() first")
    if not interpret and fused.triton() is None:
        return reference(grad, values, bound, hadamard, key, out_dtype, transpose=transpose)
    t, c = grad.shape[-2:]
    rt = rotation_matrix(hadamard, length=c, key=key, transpose=True)
    out = _op(block, jnp.dtype(out_dtype), transpose, interpret)(
        grad.reshape(-1, t, c), rt, values.reshape(-1, t, c), bound.reshape(-1, t, c // block).astype(jnp.float32))
    return out.reshape(grad.shape[:-2] + ((c, t) if transpose else (t, c)))
