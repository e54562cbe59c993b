"""Quantize throughput per spec preset, next to a device copy measured in the same run (issue 2).

For each bf16 tensor size and each named spec (lowprec.specs.names()), two jitted programs:
- qdq: dequantize(quantize(x)) back to bf16. Bytes = bf16 input read + bf16 output written
  (2 x nbytes, the copy's count), so `vs_copy` is directly the fraction of copy bandwidth.
- q:   quantize(x) alone, a QArray out. Bytes = bf16 input read + the QArray's logical size
  (elements at their format's width, 4 bits for FP4/INT4, plus scales), i.e. QArray.nbytes.
Quantization runs along the last axis (the contraction axis of a row-major activation).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from lowprec.bench.report import guarded
from lowprec.bench.timing import copy_bandwidth, gbs, random_sets, time_fn
from lowprec.numerics import dequantize, quantize, specs

MIB = 2**20
DEFAULT_SIZES_MIB = (64, 256)
SMALL_SHAPES = ((256, 512),)
COLUMNS = (("spec", "spec", ""), ("mib", "MiB", "g"), ("copy_gbs", "copy GB/s", ".0f"), ("qdq_gbs", "qdq GB/s", ".0f"),
           ("qdq_vs_copy", "qdq/copy", ".2f"), ("q_gbs", "q GB/s", ".0f"), ("q_vs_copy", "q/copy", ".2f"),
           ("q_ms", "q ms", ".3f"), ("bits", "bits/el", ".2f"))


def shape_for(mib: float) -> tuple[int, int]:
    """A [rows, 4096] bf16 matrix of `mib` MiB (rows a multiple of 256, so every block size divides)."""
    rows = int(round(mib * MIB / 2 / 4096 / 256)) * 256
    if rows < 256:
        raise ValueError(f"size {mib} MiB is below the smallest benchmark tensor (2 MiB)")
    return rows, 4096


def _programs(spec, key):
    k = key if spec.rounding == "sr" else None
    q = jax.jit(lambda x: quantize(x, spec, key=k))
    qdq = jax.jit(lambda x: dequantize(quantize(x, spec, key=k), jnp.bfloat16))
    return q, qdq


def _case(spec, arg_sets, copy_gbs: float, key, reps: int) -> dict:
    x = arg_sets[0][0]
    q, qdq = _programs(spec, key)
    out = qdq(x)
    if out.shape != x.shape or out.dtype != x.dtype or not bool(jnp.all(jnp.isfinite(out.astype(jnp.float32)))):
        raise RuntimeError(f"quantize_dequantize returned {out.dtype}{list(out.shape)} with non-finite values")
    rel = float(jnp.linalg.norm((out - x).astype(jnp.float32)) / jnp.linalg.norm(x.astype(jnp.float32)))
    t_qdq = time_fn(qdq, arg_sets, reps=reps)
    t_q = time_fn(q, arg_sets, reps=reps)
    q_bytes = x.nbytes + q(x).nbytes
    qdq_rate, q_rate = gbs(2 * x.nbytes, t_qdq.median_s), gbs(q_bytes, t_q.median_s)
    return {"qdq_ms": 1e3 * t_qdq.median_s, "qdq_gbs": qdq_rate, "qdq_vs_copy": qdq_rate / copy_gbs,
            "q_ms": 1e3 * t_q.median_s, "q_gbs": q_rate, "q_vs_copy": q_rate / copy_gbs, "q_bytes": q_bytes,
            "bits": spec.bits_per_element, "rel_err": rel, "qdq_spread": t_qdq.max_s / t_qdq.min_s}


def run_quantize(record: Callable[[dict], None], *, shapes: Sequence[tuple[int, int]], spec_names: Sequence[str],
                 reps: int, key: jax.Array, n_sets: int = 2) -> None:
    """One copy row then one row per (shape, spec), each passed to `record` as soon as it is done."""
    for s in spec_names:
        specs.get(s)  # unknown names fail before any work
    for shape in shapes:
        k_data, k_sr, key = jax.random.split(key, 3)
        arg_sets = random_sets(k_data, [shape], jnp.bfloat16, n_sets)
        mib = math.prod(shape) * 2 / MIB
        copy = guarded({"spec": "copy", "shape": list(shape), "mib": mib},
                       lambda: {"copy_gbs": copy_bandwidth(arg_sets, reps=reps)})
        record(copy)
        copy_gbs = copy.get("copy_gbs")
        for name in spec_names:
            fields = {"spec": name, "shape": list(shape), "mib": mib, "copy_gbs": copy_gbs}
            if copy_gbs is None:
                record({**fields, "error": "no copy baseline"})
                continue
            record(guarded(fields, lambda: _case(specs.get(name), arg_sets, copy_gbs, k_sr, reps)))
        del arg_sets
