"""A backward GEMM's block-quantized operand from its tensor as it lies, in one pass (Pallas on GPUs).

The backward GEMMs contract a new axis: wgrad's operands are dYᵀ and Xᵀ, dgrad's dY and Wᵀ. For
block formats with a Hadamard (mxfp4_bwd, quartet) XLA transposes such a tensor where needed,
rotates it (a GEMM), reduces the block amaxes, then scales, rounds and multiplies the codes by
their block scales (the bf16 GEMM operand): several passes, a transpose at ~2/3 of copy speed.
`split_operand` reads x[B, T, C] once per tile, transposes it (or not), rotates along the
contraction axis on tensor cores, takes the block amaxes, rounds stochastically, and stores
codes·block scales: the [B, C, T] (or [B, T, C]) bf16 operand.

Same bits as the composition it replaces (`reference`: swapaxes -> apply_hadamard -> quantize ->
split_scales) by construction: one function (`_operand`) computes a tile with the quantizer's own
scale and encode functions, draws stochastic rounding's uniforms at each element's flat index in
the output, and rotates with the same bf16 ±1 products summed in float32 (up to the
order of those sums, which a GPU test checks). Served: single-level power-of-two block scales with
stochastic rounding (Triton has no round-to-nearest-even instruction, and the two-level NVFP4 chain
needs the tensor amax first). In programs over several devices a `custom_partitioning` rule lets
each device run it on its shard (element indices come in as arrays sharded like x, so they stay
global).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from lowprec.numerics import fused
from lowprec.numerics.formats import FloatFormat
from lowprec.numerics.quantize import abs_max_bits, block_outer, encode, group_scales, quantize, split_scales
from lowprec.numerics.rounding import seed_words, uniform_at, with_sign_of
from lowprec.numerics.scales import POW2_RULES, SIGMA_RULES
from lowprec.numerics.spec import QuantSpec
from lowprec.transforms.hadamard import HadamardSpec, apply_hadamard, rotation_matrix

# Square tiles, [T, C] in and [C, T] out; T's side holds whole Hadamard blocks. Per 16384 x 5632
# bf16 operand on an H100 (2026-11-23): 0.27 ms against XLA's 0.55; warps and stages change < 6%.
_TILE, _WARPS = 64, 4


def fits(shape: tuple[int, ...], dtype, spec: QuantSpec | None, hadamard: HadamardSpec | None) -> bool:
    """Whether the kernel computes this operand: a bf16 x [..., T, C] whose tiles divide T and C,
    quantized in blocks that divide a tile, by a float format with one level of
    power-of-two amax-based scales (stored exactly: e8m0 or fp32) and stochastic rounding, rotated
    (if at all) by the matmul form in blocks of 16 to 64."""
    if not (isinstance(spec, QuantSpec) and spec.granularity == "block" and not spec.two_level
            and isinstance(spec.element, FloatFormat) and spec.scale_rule in POW2_RULES
            and spec.scale_rule not in SIGMA_RULES and spec.scale_format in ("e8m0", "fp32")
            and spec.rounding == "sr" and _TILE % spec.block == 0):
        return False
    if hadamard is not None and not (hadamard.impl == "matmul" and 16 <= hadamard.size <= _TILE):
        return False
    return (len(shape) >= 2 and jnp.dtype(dtype) == jnp.bfloat16
            and shape[-2] % _TILE == 0 and shape[-1] % _TILE == 0)


def reference(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey=None, *, transpose: bool):
    """(inner bf16, outer) of x [..., T, C] transposed to [..., C, T] (or not), rotated along its last
    axis and block-quantized along it: the composition the kernel replaces, and its definition."""
    xt = jnp.swapaxes(x, -1, -2) if transpose else x
    if hadamard is not None:
        xt = apply_hadamard(xt, hadamard, axis=-1, key=hkey)
    inner, outer = split_scales(quantize(xt, spec, key=qkey, axis=-1))
    return inner.astype(jnp.bfloat16), outer


def _operand(x, rot, seed, rows, cols, *, spec: QuantSpec, scale: float, transpose: bool):
    """x [T, C] bf16 (a tile, or a whole shard) -> v = [C, T] (transpose) or [T, C] bf16: rotated along
    its last axis by the ±1 matrix rot [h, h] (None: not rotated) times `scale`, quantized in blocks
    along it, times the block scales. seed: the two uint32 seed words; rows, cols: uint32 flat index
    of each output row's first element, and each column's offset in it."""
    v = x.T if transpose else x
    if rot is not None:  # each block a row of one [C·T/h, h] x [h, h] product, as in XLA's path, so a
        h = rot.shape[0]  # NaN or Inf reaches only its own block (not 0·Inf through a [T, T] operand)
        y = jnp.dot(v.reshape(-1, h), rot, preferred_element_type=jnp.float32) * np.float32(scale)
        v = y.astype(jnp.bfloat16).reshape(v.shape)  # rounded as apply_hadamard rounds
    c, t = v.shape
    view = v.astype(jnp.float32).reshape(c, t // spec.block, spec.block)
    enc, s, s_dec = group_scales(abs_max_bits(view, -1, keepdims=True), None, spec)
    draws = uniform_at(seed, (rows[:, None] + cols[None, :]).reshape(view.shape))
    codes = with_sign_of(jnp.abs(encode(view, enc, s, s_dec, spec, draws=draws)), view)  # -0 stays -0 in Triton
    return (codes * s).reshape(c, t).astype(jnp.bfloat16)


def _kernel(x_ref, rot_ref, seed_ref, rows_ref, cols_ref, out_ref, *, rotate, **static):
    out_ref[...] = _operand(x_ref[...], rot_ref[...] if rotate else None, (seed_ref[0], seed_ref[1]),
                            rows_ref[...], cols_ref[...], **static)


def _pallas(x, rot, seed, rows, cols, *, transpose, interpret=False, **static):
    b, t, c = x.shape
    whole = lambda *shape: pl.BlockSpec(shape, lambda n, i, j: (0,) * len(shape))  # noqa: E731
    out = (lambda n, i, j: (n, j, i)) if transpose else (lambda n, i, j: (n, i, j))
    row, col = ((lambda n, i, j: (n, j)), (lambda n, i, j: (i,))) if transpose else (
        (lambda n, i, j: (n, i)), (lambda n, i, j: (j,)))
    params = {} if interpret else {"compiler_params": fused.triton_params(_WARPS)}
    return pl.pallas_call(
        functools.partial(_kernel, transpose=transpose, **static), grid=(b, t // _TILE, c // _TILE),
        in_specs=[pl.BlockSpec((None, _TILE, _TILE), lambda n, i, j: (n, i, j)), whole(*rot.shape), whole(2),
                  pl.BlockSpec((None, _TILE), row), pl.BlockSpec((_TILE,), col)],
        out_specs=pl.BlockSpec((None, _TILE, _TILE), out),
        out_shape=jax.ShapeDtypeStruct((b, c, t) if transpose else (b, t, c), jnp.bfloat16),
        interpret=interpret, **params,
    )(x, rot, seed, rows, cols)


def _xla(x, rot, seed, rows, cols, *, rotate, **static):
    """The kernel's arithmetic on whole [T, C] slices (backends without the Pallas kernel)."""
    one = functools.partial(_operand, rot=rot if rotate else None, seed=(seed[0], seed[1]), **static)
    return jax.vmap(lambda xb, rb: one(xb, rows=rb, cols=cols))(x, rows)


@functools.cache
def _op(spec: QuantSpec, rotate: bool, scale: float, transpose: bool, interpret: bool):
    """The kernel as an op XLA's SPMD partitioner splits per shard: x [B, T, C] keeps its sharding,
    the output [B, C, T] swaps T's and C's (or keeps x's); the rotation and seed are replicated;
    the row indices ([B, C] or [B, T]) and column offsets ([T] or [C]) are sharded like x's axes.
    In a one-device program JAX inlines `local` itself."""
    static = dict(spec=spec, rotate=rotate, scale=scale, transpose=transpose)

    def local(x, rot, seed, rows, cols):
        if interpret:
            return _pallas(x, rot, seed, rows, cols, interpret=True, **static)
        return lax.platform_dependent(x, rot, seed, rows, cols, default=functools.partial(_xla, **static),
                                      cuda=functools.partial(_pallas, **static))

    op = custom_partitioning(local)

    def shardings(x_sharding):
        b, t, c = tuple(x_sharding.spec) + (None,) * (3 - len(x_sharding.spec))
        ns = lambda *s: NamedSharding(x_sharding.mesh, P(*s))  # noqa: E731
        if not transpose:
            return ns(b, t, c), (x_sharding, ns(), ns(), ns(b, t), ns(c))
        return ns(b, c, t), (x_sharding, ns(), ns(), ns(b, c), ns(t))

    def infer(mesh, arg_shapes, result_shape):
        return shardings(arg_shapes[0].sharding)[0]

    def partition(mesh, arg_shapes, result_shape):
        out, args = shardings(arg_shapes[0].sharding)
        return mesh, local, out, args

    rule = "b t c, r q, s, b c, t -> b c t" if transpose else "b t c, r q, s, b t, c -> b t c"
    op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                     need_replication_factors=("r", "q", "s"))
    return op


def split_operand(x, spec: QuantSpec, hadamard: HadamardSpec | None, qkey, hkey=None, *, transpose: bool,
                  interpret: bool = False):
    """`reference(x, spec, hadamard, qkey, hkey, transpose=transpose)` for x [..., T, C] where `fits`:
    the Pallas kernel on CUDA devices where this JAX has Pallas's Triton backend (anywhere with
    interpret=True, for tests), the same arithmetic in XLA on other backends, the composition itself
    without Triton."""
    if not fits(x.shape, x.dtype, spec, hadamard):
        raise ValueError(f"split_operand: no kernel for a {jnp.dtype(x.dtype).name} {tuple(x.shape)} operand "
                         f"quantized as {spec.describe() if isinstance(spec, QuantSpec) else spec!r} "
                         f"with hadamard={hadamard}; check fits() first")
    if not interpret and fused.triton() is None:
        return reference(x, spec, hadamard, qkey, hkey, transpose=transpose)
    lead, (t, c) = x.shape[:-2], x.shape[-2:]
    x3 = x.reshape((-1, t, c))
    rows_per, row_len = (c, t) if transpose else (t, c)  # the output's [rows, row length] per batch
    rotate = hadamard is not None
    rot, scale = jnp.zeros((16, 16), jnp.bfloat16), 1.0
    if rotate:
        rot = rotation_matrix(hadamard, length=row_len, key=hkey, dtype=jnp.bfloat16, normalized=False)
        scale = float(1.0 / np.sqrt(rot.shape[0]))
    b_ids, r_ids = (lax.iota(jnp.uint32, n) for n in (x3.shape[0], rows_per))
    rows = (b_ids[:, None] * np.uint32(rows_per) + r_ids[None, :]) * np.uint32(row_len)  # (b·R + r)·L
    inner = _op(spec, rotate, scale, transpose, interpret)(x3, rot, seed_words(qkey), rows,
                                                            lax.iota(jnp.uint32, row_len))
    return inner.reshape(lead + (rows_per, row_len)), block_outer(spec)
