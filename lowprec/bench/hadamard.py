"""Matmul vs butterfly Hadamard transforms, against a device copy measured in the same run.

x is [16384, 4096] bf16 by default; each (axis, size, impl) is jitted, warmed up and timed as
the median of `reps` calls. Bandwidth counts bytes read plus written (2 x nbytes), the copy's
count, so `vs_copy` is the fraction of copy bandwidth. Axis -1 rotates d (the forward
contraction), axis 0 the tokens (the wgrad contraction).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lowprec.bench.report import guarded
from lowprec.bench.timing import copy_bandwidth, gbs, random_sets, time_fn
from lowprec.transforms import HadamardSpec, apply_hadamard

SIZES = (16, 32, 64, 128, 256)
IMPLS = ("matmul", "butterfly")
SIGNS = ("none", "per_call")
DEFAULT_SHAPE = (16384, 4096)
SMALL_SHAPE = (256, 512)
COLUMNS = (("axis", "axis", ""), ("size", "size", ""), ("impl", "impl", ""), ("ms", "ms", ".3f"),
           ("gbs", "GB/s", ".0f"), ("vs_copy", "vs copy", ".2f"), ("max_abs_diff_vs_matmul", "|bfly-mm|", ".1e"))


def _case(arg_sets, size: int, impl: str, axis: int, signs: str, key, copy_gbs: float, reps: int):
    spec = HadamardSpec(size=size, signs=signs, impl=impl)
    fn = jax.jit(lambda v: apply_hadamard(v, spec, axis=axis, key=key))
    t = time_fn(fn, arg_sets, reps=reps)
    rate = gbs(2 * arg_sets[0][0].nbytes, t.median_s)
    return {"ms": 1e3 * t.median_s, "gbs": rate, "vs_copy": rate / copy_gbs}, np.asarray(fn(arg_sets[0][0]), np.float32)


def run_hadamard(record: Callable[[dict], None], *, shape: Sequence[int], sizes: Sequence[int] = SIZES,
                 axes: Sequence[int] = (-1, 0), signs: str = "none", reps: int, key: jax.Array,
                 n_sets: int = 2) -> None:
    """A copy row, then one row per (axis, size, impl); butterfly rows carry their max |diff| to matmul."""
    if signs not in SIGNS:
        raise ValueError(f"signs must be one of {SIGNS}, got {signs!r}")
    k_data, k_signs = jax.random.split(key)
    arg_sets = random_sets(k_data, [tuple(shape)], jnp.bfloat16, n_sets)
    copy = guarded({"impl": "copy"}, lambda: {"gbs": copy_bandwidth(arg_sets, reps=reps), "vs_copy": 1.0})
    record(copy)
    if "gbs" not in copy:
        return
    sign_key = k_signs if signs == "per_call" else None
    for axis in axes:
        for size in sizes:
            outs = {}
            for impl in IMPLS:
                def work():
                    row, outs[impl] = _case(arg_sets, size, impl, axis, signs, sign_key, copy["gbs"], reps)
                    if impl == "butterfly" and "matmul" in outs:
                        row["max_abs_diff_vs_matmul"] = float(np.max(np.abs(outs["butterfly"] - outs["matmul"])))
                    return row

                record(guarded({"axis": axis, "size": size, "impl": impl}, work))
