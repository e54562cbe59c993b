"""Pallas plumbing shared by the gemm layer's kernels (`fused_operand`, `fused_gradient`): a kernel
over square tiles of x [B, T, C], and an op that XLA's SPMD partitioner runs per shard.

Tiles of 64 x 64 and 4 warps: per 16384 x 5632 bf16 operand on an H100 (2026-11-23) the operand
kernel took 0.27 ms against XLA's 0.55; other warps and stages changed that by < 6%. Tiles of 128
were 1.4-2x slower with 4, 8 or 16 warps (their registers spill).
"""
from __future__ import annotations

import functools

from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from lowprec.numerics import fused

TILE, WARPS = 64, 4


def whole(*shape):
    """A BlockSpec giving every program the whole (small) input."""
    return pl.BlockSpec(shape, lambda n, i, j: (0,) * len(shape))


def tile_spec(cols: int = TILE, *, transpose: bool = False):
    """A BlockSpec giving program (n, i, j) tile [i, j] of a [B, T, C / (TILE / cols)] array, or with
    transpose tile [j, i] of a [B, C, T] one (an output written transposed)."""
    if transpose:
        return pl.BlockSpec((None, TILE, TILE), lambda n, i, j: (n, j, i))
    return pl.BlockSpec((None, TILE, cols), lambda n, i, j: (n, i, j))


def tiled_call(kernel, x, rot, *extra, extra_specs, out_spec, out_shape, interpret, warps: int = WARPS):
    """`kernel` over x [B, T, C] in [TILE, TILE] tiles, with the whole rotation and `extra` inputs."""
    b, t, c = x.shape
    params = {} if interpret else {"compiler_params": fused.triton_params(warps)}
    return pl.pallas_call(
        kernel, grid=(b, t // TILE, c // TILE), in_specs=[tile_spec(), whole(*rot.shape), *extra_specs],
        out_specs=out_spec, out_shape=out_shape, interpret=interpret, **params,
    )(x, rot, *extra)


def partitioned(pallas, xla, static: dict, interpret: bool, out_axes: str | tuple[str, ...], in_axes: tuple[str, ...],
                rule: str, replicated: tuple[str, ...], **factors):
    """`pallas` (or, off CUDA, `xla`) as an op XLA's SPMD partitioner splits per shard, x [B, T, C]
    first. out_axes (a tuple for several outputs) and in_axes (the other inputs) name, per axis,
    which of x's axes ("b", "t", "c") it is sharded like ("": replicated); rule, replicated, factors:
    the Shardy rule. In a one-device program JAX inlines `local` itself."""
    def local(*args):
        if interpret:
            return pallas(*args, interpret=True, **static)
        return lax.platform_dependent(*args, default=functools.partial(xla, **static),
                                      cuda=functools.partial(pallas, **static))

    op = custom_partitioning(local)

    def shardings(x_sharding):
        axes = dict(zip("btc", tuple(x_sharding.spec) + (None,) * (3 - len(x_sharding.spec))))
        ns = lambda names: NamedSharding(x_sharding.mesh, P(*(axes[n] for n in names)))  # noqa: E731
        out = ns(out_axes) if isinstance(out_axes, str) else tuple(ns(a) for a in out_axes)
        return out, (x_sharding,) + tuple(ns(a) for a in in_axes)

    def infer(mesh, arg_shapes, result_shape):
        return shardings(arg_shapes[0].sharding)[0]

    def partition(mesh, arg_shapes, result_shape):
        out, args = shardings(arg_shapes[0].sharding)
        return mesh, local, out, args

    op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                     need_replication_factors=replicated, **factors)
    return op
