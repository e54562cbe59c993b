"""A backward GEMM's block-quantized operand from its tensor as it lies, in one pass (Pallas on GPUs).

The backward GEMMs contract a new axis: wgrad's operands are dYᵀ and Xᵀ, dgrad's dY and Wᵀ. For
block formats (MX, NVFP4, with or without a Hadamard) XLA transposes such a tensor where needed,
rotates it (a GEMM), reduces the block amaxes, then scales, rounds and multiplies the codes by
their block scales (the bf16 GEMM operand): several passes, a transpose at ~2/3 of copy speed.
`split_operand` reads x[B, T, C] once per tile, transposes it (or not), rotates along the
contraction axis on tensor cores, takes the block amaxes, rounds (nearest-even or stochastically),
and stores codes·block scales: the [B, C, T] (or [B, T, C]) bf16 operand. NVFP4's two-level chain
needs the tensor amax first: XLA's reduction, or for a rotated operand a read-only pass of the
same kernel shape (`_amax_op`). `forward_operand` is the same pass for a forward operand whose
clipping mask the backward needs too (QuEST's sigma scales, where XLA takes the block std's two
reductions and the codes as passes of their own): it stores the codes·scales and the mask, packed
one bit per element (`clip_mask`).

Same bits as the composition it replaces (`reference`: swapaxes -> apply_hadamard -> quantize ->
split_scales) by construction: one function (`_operand`) computes a tile with the quantizer's own
scale and encode functions (in their `portable` form, which Triton lowers), draws stochastic
rounding's uniforms at each element's flat index in the output, and rotates with the same bf16 ±1
products summed in float32 (up to the order of those sums, and of QuEST's std, which GPU tests
check). Compiled, the scales' correctly rounded division and UE4M3 cast are single GPU instructions
(tested exhaustively on GPUs). In programs over several devices a `custom_partitioning` rule lets each device run it on
its shard (element indices come in as arrays sharded like x, so they stay global).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas.triton import elementwise_inline_asm as triton_asm

from lowprec.gemm import clip_mask, tiles
from lowprec.numerics import fused
from lowprec.numerics.formats import FloatFormat
from lowprec.numerics.quantize import (
    abs_max, abs_max_bits, block_outer, encode, group_scales, quantize, split_scales, spread, tensor_amax,
    tensor_scales,
)
from lowprec.numerics.rounding import seed_words, uniform_at
from lowprec.numerics.scales import cast_scale
from lowprec.numerics.spec import QuantSpec
from lowprec.transforms.hadamard import HadamardSpec, apply_hadamard, rotation_matrix

# Square tiles (`tiles.TILE`), [T, C] in and [C, T] out; T's side holds whole Hadamard blocks.
_TILE = tiles.TILE
# The forward pass (QuEST's block std too) with 8 warps: 0.293 -> 0.242 ms per 16384 x 5632 operand
# on an H100 (2026-11-23); the backward passes measured the same or slower with 8.
_FORWARD_WARPS = 8


def fits(shape: tuple[int, ...], dtype, spec: QuantSpec | None, hadamard: HadamardSpec | None) -> bool:
    """Whether the kernel computes this operand: a bf16 x [..., T, C] whose tiles divide T and C,
    quantized in blocks that divide a tile by a float format with amax- or sigma-based scales (one
    level, or NVFP4's two) stored in e8m0, fp32 or a UE format, rounded to nearest even or
    stochastically, rotated (if at all) by the matmul form in blocks of 16 to 64."""
    if not (isinstance(spec, QuantSpec) and spec.granularity == "block" and isinstance(spec.element, FloatFormat)
            and spec.scale_format != "bf16"
            and spec.rounding in ("rne", "sr") and _TILE % spec.block == 0):
        return False
    if hadamard is not None and not (hadamard.impl == "matmul" and 16 <= hadamard.size <= _TILE):
        return False
    return (len(shape) >= 2 and jnp.dtype(dtype) == jnp.bfloat16
            and shape[-2] % _TILE == 0 and shape[-1] % _TILE == 0)


def _composed(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey):
    """(v, its QArray): x rotated along its last axis (if at all) and block-quantized along it."""
    v = x if hadamard is None else apply_hadamard(x, hadamard, axis=-1, key=hkey)
    return v, quantize(v, spec, key=qkey, axis=-1)


def reference(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey=None, *, transpose: bool):
    """(inner bf16, outer) of x [..., T, C] transposed to [..., C, T] (or not), rotated along its last
    axis and block-quantized along it: the composition the kernel replaces, and its definition."""
    _, q = _composed(jnp.swapaxes(x, -1, -2) if transpose else x, spec, hadamard, qkey, hkey)
    inner, outer = split_scales(q)
    return inner.astype(jnp.bfloat16), outer


def forward_reference(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey=None):
    """(inner bf16, keep bits uint32 [..., T, C / 32]) of x [..., T, C] rotated and block-quantized
    along its last axis: the operand and its packed clipping mask (`clip_mask.keep` of the rotated
    values against the largest code times the block scales), by composition."""
    v, q = _composed(x, spec, hadamard, qkey, hkey)
    bits = clip_mask.pack(clip_mask.keep(v, spec.element.max_value * q.scale.astype(jnp.float32)))
    return split_scales(q)[0].astype(jnp.bfloat16), bits


def _rotated(x, rot, *, scale: float, transpose: bool):
    """x [T, C] bf16 -> v = [C, T] (transpose) or [T, C] bf16, rotated along its last axis by the ±1
    matrix rot [h, h] (None: not rotated) times `scale`. Each block is a row of one [C·T/h, h] x
    [h, h] product, as in XLA's path, so a NaN or Inf reaches only its own block (not 0·Inf through
    a [T, T] operand)."""
    v = x.T if transpose else x
    if rot is None:
        return v
    h = rot.shape[0]
    y = jnp.dot(v.reshape(-1, h), rot, preferred_element_type=jnp.float32) * np.float32(scale)
    return y.astype(jnp.bfloat16).reshape(v.shape)  # rounded as apply_hadamard rounds


def _column_amax(x, rot, *, scale: float, transpose: bool):
    """max |v| of the rotated tile per column of x: [C] float32 (the two-level chain's statistic)."""
    v = _rotated(x, rot, scale=scale, transpose=transpose).astype(jnp.float32)
    return abs_max_bits(v, 1 if transpose else 0)


def _ieee_divide(a, b):
    """a / b correctly rounded by PTX's div.rn.f32 (Triton's `/` is div.full.f32, off by an ulp):
    `div_rn` in a compiled kernel, where its integer correction cost ~15% of an NVFP4 operand."""
    a, b = jnp.broadcast_arrays(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    return triton_asm("div.rn.f32 $0, $1, $2;", args=[a, b], constraints="=f,f,f", pack=1,
                      result_shape_dtypes=[jax.ShapeDtypeStruct(a.shape, jnp.float32)])[0]


def _hardware_cast(s, scale_format: str, *, portable: bool):
    """`cast_scale` in a compiled kernel: UE4M3 by the GPU's saturating FP8 cast (RNE onto E4M3's
    values; Triton keeps the round trip, where XLA needs a barrier), others as cast_scale."""
    if scale_format == "ue4m3":
        return s.astype(jnp.float8_e4m3fn).astype(jnp.float32)
    return cast_scale(s, scale_format, portable=portable)


def _operand(x, rot, seed, level, rows, cols, *, spec: QuantSpec, scale: float, transpose: bool,
             hardware: bool = False):
    """x [T, C] bf16 (a tile, or a whole shard) -> `_rotated` v, quantized in blocks along its last
    axis, times the block scales (bf16). seed: the two uint32 seed words; level: the two-level
    chain's (S_enc, S_dec) (computed outside: Triton cannot bitcast a constant); rows, cols: uint32
    flat index of each output row's first element, and each column's offset in it (stochastic
    rounding's draws). hardware: the scales' division and cast by GPU instructions (compiled kernels).
    Returns (inner, v, block scales [rows, row length / block] float32)."""
    v = _rotated(x, rot, scale=scale, transpose=transpose)
    c, t = v.shape
    view = v.astype(jnp.float32).reshape(c, t // spec.block, spec.block)
    ops = dict(divide=_ieee_divide, cast=_hardware_cast) if hardware else {}
    enc, s, s_dec = group_scales(abs_max_bits(view, -1, keepdims=True), spread(view, -1, spec), spec,
                                 level if spec.two_level else None, portable=True, **ops)
    draws = uniform_at(seed, (rows[:, None] + cols[None, :]).reshape(view.shape)) if spec.rounding == "sr" else None
    codes = encode(view, enc, s, s_dec, spec, draws=draws, portable=True)
    return (codes * s).reshape(c, t).astype(jnp.bfloat16), v, s.reshape(c, t // spec.block)


def _outputs(*args, forward: bool, **static):
    """`_operand`'s outputs as stored: (inner,), or for a forward operand (inner, keep bits)."""
    inner, v, s = _operand(*args, **static)
    if not forward:
        return (inner,)
    return inner, clip_mask.pack(clip_mask.keep(v, static["spec"].element.max_value * s))


def _kernel(x_ref, rot_ref, seed_ref, level_ref, rows_ref, cols_ref, *out_refs, rotate, **static):
    outs = _outputs(x_ref[...], rot_ref[...] if rotate else None, (seed_ref[0], seed_ref[1]),
                    (level_ref[0], level_ref[1]), rows_ref[...], cols_ref[...], **static)
    for ref, value in zip(out_refs, outs):
        ref[...] = value


def _amax_kernel(x_ref, rot_ref, out_ref, *, rotate, **static):
    out_ref[...] = _column_amax(x_ref[...], rot_ref[...] if rotate else None, **static)


def _pallas(x, rot, seed, level, rows, cols, *, transpose, forward, interpret=False, **static):
    b, t, c = x.shape
    row, col = ((lambda n, i, j: (n, j)), (lambda n, i, j: (i,))) if transpose else (
        (lambda n, i, j: (n, i)), (lambda n, i, j: (j,)))
    out_spec = tiles.tile_spec(transpose=transpose)
    out_shape = jax.ShapeDtypeStruct((b, c, t) if transpose else (b, t, c), jnp.bfloat16)
    if forward:  # + the keep bits (never transposed)
        out_spec = [out_spec, tiles.tile_spec(_TILE // clip_mask.WORD)]
        out_shape = [out_shape, jax.ShapeDtypeStruct((b, t, c // clip_mask.WORD), jnp.uint32)]
    return tiles.tiled_call(
        functools.partial(_kernel, transpose=transpose, forward=forward, hardware=not interpret, **static), x, rot,
        seed, level, rows, cols,
        extra_specs=[tiles.whole(2), tiles.whole(2), pl.BlockSpec((None, _TILE), row), pl.BlockSpec((_TILE,), col)],
        out_spec=out_spec, interpret=interpret, out_shape=out_shape, warps=_FORWARD_WARPS if forward else tiles.WARPS)


def _amax_pallas(x, rot, *, interpret=False, **static):
    b, t, c = x.shape
    return tiles.tiled_call(functools.partial(_amax_kernel, **static), x, rot, extra_specs=[],
                            out_spec=pl.BlockSpec((None, None, _TILE), lambda n, i, j: (n, i, j)),
                            out_shape=jax.ShapeDtypeStruct((b, t // _TILE, c), jnp.float32), interpret=interpret)


def _xla(x, rot, seed, level, rows, cols, *, rotate, forward, **static):
    """The kernel's arithmetic on whole [T, C] slices (backends without the Pallas kernel)."""
    one = functools.partial(_outputs, rot=rot if rotate else None, seed=(seed[0], seed[1]),
                            level=(level[0], level[1]), forward=forward, **static)
    outs = jax.vmap(lambda xb, rb: one(xb, rows=rb, cols=cols))(x, rows)
    return outs if forward else outs[0]


def _amax_xla(x, rot, *, rotate, **static):
    """The statistics kernel's arithmetic on [_TILE, C] slabs."""
    b, t, c = x.shape
    one = functools.partial(_column_amax, rot=rot if rotate else None, **static)
    return jax.vmap(jax.vmap(one))(x.reshape(b, t // _TILE, _TILE, c))


@functools.cache
def _op(spec: QuantSpec, rotate: bool, scale: float, transpose: bool, forward: bool, interpret: bool):
    """The kernel as a partitioned op: x [B, T, C] keeps its sharding, the output [B, C, T] swaps T's
    and C's (or keeps x's); the rotation, seed and tensor-level scales are replicated; the row indices ([B, C]
    or [B, T]) and column offsets ([T] or [C]) are sharded like x's axes. A forward operand's keep
    bits [B, T, C / 32] are sharded as x (the words as C)."""
    static = dict(spec=spec, rotate=rotate, scale=scale, transpose=transpose, forward=forward)
    if forward:
        return tiles.partitioned(_pallas, _xla, static, interpret, ("btc", "btc"), ("", "", "", "bt", "c"),
                                 "b t (c k), r q, s, a, b t, (c k) -> b t (c k), b t c",
                                 ("k", "r", "q", "s", "a"), k=clip_mask.WORD)
    if transpose:
        return tiles.partitioned(_pallas, _xla, static, interpret, "bct", ("", "", "", "bc", "t"),
                                 "b t c, r q, s, a, b c, t -> b c t", ("r", "q", "s", "a"))
    return tiles.partitioned(_pallas, _xla, static, interpret, "btc", ("", "", "", "bt", "c"),
                             "b t c, r q, s, a, b t, c -> b t c", ("r", "q", "s", "a"))


@functools.cache
def _amax_op(rotate: bool, scale: float, transpose: bool, interpret: bool):
    """The statistics kernel as a partitioned op: x [B, T, C] -> per tile row and column of x, the
    rotated operand's max |v|, [B, T/_TILE, C], sharded as x (T's tiles as T)."""
    static = dict(rotate=rotate, scale=scale, transpose=transpose)
    return tiles.partitioned(_amax_pallas, _amax_xla, static, interpret, "btc", ("",),
                             "b (t k) c, r q -> b t c", ("k", "r", "q"), k=_TILE)


def _run(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey, transpose: bool, forward: bool,
         interpret: bool):
    """The kernel's op on x [..., T, C] as [B, T, C], its inputs prepared: (outputs, (S_enc, S_dec))."""
    t, c = x.shape[-2:]
    x3 = x.reshape((-1, t, c))
    rows_per, row_len = (c, t) if transpose else (t, c)  # the output's [rows, row length] per batch
    rotate = hadamard is not None
    rot, scale = jnp.zeros((16, 16), jnp.bfloat16), 1.0
    if rotate:
        rot = rotation_matrix(hadamard, length=row_len, key=hkey, dtype=jnp.bfloat16, normalized=False)
        scale = float(1.0 / np.sqrt(rot.shape[0]))
    level = jnp.ones((2,), jnp.float32)  # (S_enc, S_dec) of the two-level chain
    if spec.two_level:  # a first pass for the tensor amax: rotated, a read-only kernel; else XLA's reduction
        t_amax = abs_max(_amax_op(rotate, scale, transpose, interpret)(x3, rot)) if rotate else tensor_amax(x3)
        level = jnp.stack(tensor_scales(spec, t_amax))
    seed = seed_words(qkey) if spec.rounding == "sr" else jnp.zeros((2,), jnp.uint32)
    # index constants (numpy: XLA embeds them, where an iota would be a kernel launch per call)
    b_ids, r_ids = (np.arange(n, dtype=np.uint32) for n in (x3.shape[0], rows_per))
    rows = (b_ids[:, None] * np.uint32(rows_per) + r_ids[None, :]) * np.uint32(row_len)  # (b·R + r)·L, mod 2^32
    outs = _op(spec, rotate, scale, transpose, forward, interpret)(x3, rot, seed, level, jnp.asarray(rows),
                                                                   jnp.asarray(np.arange(row_len, dtype=np.uint32)))
    return outs, level


def _check(name: str, x, spec, hadamard):
    if not fits(x.shape, x.dtype, spec, hadamard):
        raise ValueError(f"{name}: no kernel for a {jnp.dtype(x.dtype).name} {tuple(x.shape)} operand "
                         f"quantized as {spec.describe() if isinstance(spec, QuantSpec) else spec!r} "
                         f"with hadamard={hadamard}; check fits() first")


def split_operand(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey=None, *, transpose: bool,
                  interpret: bool = False):
    """`reference(x, spec, hadamard, qkey, hkey, transpose=transpose)` for x [..., T, C] where `fits`:
    the Pallas kernel on CUDA devices where this JAX has Pallas's Triton backend (anywhere with
    interpret=True, for tests), the same arithmetic in XLA on other backends, the composition itself
    without Triton."""
    _check("split_operand", x, spec, hadamard)
    if not interpret and fused.triton() is None:
        return reference(x, spec, hadamard, qkey, hkey, transpose=transpose)
    inner, level = _run(x, spec, hadamard, qkey, hkey, transpose, False, interpret)
    t, c = x.shape[-2:]
    shape = x.shape[:-2] + ((c, t) if transpose else (t, c))
    return inner.reshape(shape), block_outer(spec, level[1] if spec.two_level else None)


def forward_operand(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey=None, *, interpret: bool = False):
    """`forward_reference(x, spec, hadamard, qkey, hkey)` for a one-level spec where `fits`, from the
    same kernel (placed as split_operand's): a forward operand whose clipping mask the backward
    needs (a clipping estimator's), and whose codes a backward GEMM may reuse."""
    _check("forward_operand", x, spec, hadamard)
    if spec.two_level:
        raise ValueError("forward_operand: the two-level (NVFP4) chain's scales are not the block scales alone; "
                         "use split_operand")
    if not interpret and fused.triton() is None:
        return forward_reference(x, spec, hadamard, qkey, hkey)
    (inner, bits), _ = _run(x, spec, hadamard, qkey, hkey, False, True, interpret)
    return inner.reshape(x.shape), bits.reshape(x.shape[:-1] + (-1,))
