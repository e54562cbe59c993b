"""Per-tensor FP8 codes in both layouts from one read of the input (a Pallas kernel on GPUs).

An FP8 GEMM on Hopper takes both operands contraction-major, so a training step needs every
per-tensor operand twice: X[M,K] for fprop and Xᵀ[K,M] for wgrad, W both ways, dY both ways. XLA
writes them as a cast, then a transpose of the codes (or one multi-output fusion that runs at ~half
of copy speed). `cast_transpose` reads each tile once, scales, saturates and rounds it in registers,
and stores the codes and their transpose: 2 bytes read and 2 written per element.

Same bits as `quantize` by construction: it multiplies by the exact reciprocal of a power-of-two
scale (x·(1/s) == x/s) and uses the same saturating RNE cast. Other backends, and shapes the tiles
do not divide, take XLA's path (`lax.platform_dependent` picks at lowering time). In programs over
several devices (data parallel, FSDP) a `custom_partitioning` rule lets each device cast its own shard.
JAX 0.11 warns that Pallas's Triton backend is deprecated (in favour of Mosaic GPU); where it is gone,
XLA's path runs.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from lowprec.numerics.formats import FloatFormat
from lowprec.numerics.rounding import FP8_DTYPES, round_finite

# Square tiles (rows = columns, so both layouts' stores are equally contiguous) and warps per program:
# the largest that divides both axes. On an H100 both run at copy speed on large tensors (2026-11-23);
# 128 is faster on small ones (a 5632 x 2048 tensor: 0.041 vs 0.056 ms with the amax pass).
_TILES = ((128, 8), (64, 4))


def writes(fmt) -> bool:
    """Whether `fmt`'s codes are an FP8 dtype this cast writes (E4M3 or E5M2)."""
    return isinstance(fmt, FloatFormat) and fmt.native_dtype in FP8_DTYPES


def _tile_kernel(x_ref, mult_ref, q_ref, qt_ref, *, max_value: float, dtype):
    mult, ok = mult_ref[0], mult_ref[1]  # exact 1/scale; 1.0 when the tensor is finite, else 0.0
    y = jnp.clip(x_ref[...].astype(jnp.float32) * mult, -max_value, max_value)
    y = jnp.where(ok > 0, y, 0.0)
    q_ref[...] = y.astype(dtype)
    qt_ref[...] = y.T.astype(dtype)


def tile(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(tile side, warps) of the kernel for the last two axes of `shape`, or None when no tile fits."""
    return next(((t, w) for t, w in _TILES if len(shape) >= 2 and shape[-2] % t == 0 and shape[-1] % t == 0), None)


def _xla(x, mult, fmt: FloatFormat):
    q = jnp.where(mult[1] > 0, round_finite(x.astype(jnp.float32) * mult[0], fmt), 0.0).astype(fmt.native_dtype)
    return q, jnp.swapaxes(q, -1, -2)


def _pallas(x, mult, fmt: FloatFormat, interpret: bool = False):
    b, r, c = x.shape
    t, warps = tile(x.shape)
    kernel = functools.partial(_tile_kernel, max_value=fmt.max_value, dtype=fmt.native_dtype)
    params = {} if interpret else {"compiler_params": triton_params(warps)}
    return pl.pallas_call(
        kernel,
        grid=(b, r // t, c // t),
        in_specs=[pl.BlockSpec((None, t, t), lambda n, i, j: (n, i, j)),
                  pl.BlockSpec((2,), lambda n, i, j: (0,))],
        out_specs=[pl.BlockSpec((None, t, t), lambda n, i, j: (n, i, j)),
                   pl.BlockSpec((None, t, t), lambda n, i, j: (n, j, i))],
        out_shape=[jax.ShapeDtypeStruct((b, r, c), fmt.native_dtype),
                   jax.ShapeDtypeStruct((b, c, r), fmt.native_dtype)],
        interpret=interpret,
        **params,
    )(x, mult)


@functools.cache
def triton():
    """Pallas's Triton backend module, or None where this JAX has none (JAX 0.11 deprecates it)."""
    try:
        from jax.experimental.pallas import triton
    except ImportError:
        return None
    return triton


def triton_params(warps: int):
    return triton().CompilerParams(num_warps=warps, num_stages=1)


def _local(x, mult, fmt: FloatFormat, interpret: bool):
    """cast_transpose of one device's [B, R, C] block: the kernel where the tiles divide it (compiled
    on CUDA, chosen at lowering time; interpreted anywhere in tests), else XLA's path."""
    if tile(x.shape) is None:
        return _xla(x, mult, fmt)
    if interpret:
        return _pallas(x, mult, fmt, interpret=True)
    return lax.platform_dependent(x, mult, default=functools.partial(_xla, fmt=fmt),
                                  cuda=functools.partial(_pallas, fmt=fmt))


def _out_specs(x_sharding):
    """Shardings of (codes, transposed codes) for an x of [B, R, C] sharded as x_sharding."""
    b, r, c = tuple(x_sharding.spec) + (None,) * (3 - len(x_sharding.spec))
    return NamedSharding(x_sharding.mesh, P(b, r, c)), NamedSharding(x_sharding.mesh, P(b, c, r))


@functools.cache
def _partitioned(fmt: FloatFormat, interpret: bool):
    """`_local` as an op XLA's SPMD partitioner splits instead of gathering: the cast is tile-local,
    so each device casts its own shard; the codes keep x's sharding and the transposed codes swap
    the last two axes' shardings. (A bare Pallas call has no sharding rule: on 2 GPUs data parallel
    XLA gathered x onto both and fp8 ran at 1.03x one GPU's tokens/s.) In a one-device program JAX
    inlines `_local` itself."""
    def local(x, mult):
        return _local(x, mult, fmt, interpret)

    op = custom_partitioning(local)

    def infer(mesh, arg_shapes, result_shape):
        return _out_specs(arg_shapes[0].sharding)

    def partition(mesh, arg_shapes, result_shape):
        x_sharding = arg_shapes[0].sharding
        return mesh, local, _out_specs(x_sharding), (x_sharding, NamedSharding(x_sharding.mesh, P()))

    op.def_partition(partition, infer_sharding_from_operands=infer,
                     sharding_rule="b r c, t -> b r c, b c r", need_replication_factors=("t",))
    return op


def cast_transpose(x: jax.Array, mult: jax.Array, fmt: FloatFormat, *, interpret: bool = False):
    """(codes [..., R, C], codes transposed [..., C, R]) of x·mult[0], saturated to ±fmt.max_value and
    rounded to nearest even in fmt's native FP8 dtype; all zeros when mult[1] == 0 (a non-finite
    tensor). mult: float32 [2] = (exact reciprocal of the scale, finite flag).

    The Pallas kernel runs on CUDA devices where the tiles divide the last two axes of each device's
    shard and this JAX has Pallas's Triton backend (or anywhere with interpret=True, for tests);
    otherwise XLA computes the same bits.
    """
    if not writes(fmt):
        raise ValueError(f"cast_transpose writes E4M3 or E5M2 codes, not format {fmt.name!r}")
    lead = x.shape[:-2]
    x3 = x.reshape((-1,) + x.shape[-2:])
    if tile(x.shape) is None or (not interpret and triton() is None):
        q, qt = _xla(x3, mult, fmt)
    else:
        q, qt = _partitioned(fmt, interpret)(x3, mult)
    return q.reshape(x.shape), qt.reshape(lead + x.shape[-1:] + x.shape[-2:-1])
