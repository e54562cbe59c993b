"""Device time per HLO op from a jax.profiler trace (GPU): where a compiled program's time goes.

Used by tools/profile_gemm.py and tools/profile_train.py; not a benchmark (no baseline, no ratios).
"""
from __future__ import annotations

import collections
import glob
import tempfile
from typing import Callable

import jax


def device_ops(call: Callable[[int], object], reps: int, warmup: int = 3) -> tuple[collections.Counter, list[str]]:
    """(ms per call of each device op, the trace's device line names) over `reps` traced calls of
    `call(i)` (i counts every call, warm-up included, so donated state can be threaded through)."""
    from jax.profiler import ProfileData

    for i in range(warmup):
        jax.block_until_ready(call(i))
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for i in range(warmup, warmup + reps):
            jax.block_until_ready(call(i))
        jax.profiler.stop_trace()
        data = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[-1])
    lines = [line for plane in data.planes if plane.name.startswith("/device:GPU") for line in plane.lines]
    # HLO op names where the trace has them, else kernel names from the stream lines
    chosen = [ln for ln in lines if ln.name == "XLA Ops"] or [ln for ln in lines if ln.name.startswith("Stream")]
    per_op = collections.Counter()
    for line in chosen:
        for ev in line.events:
            per_op[ev.name] += ev.duration_ns / 1e6 / reps
    return per_op, sorted({ln.name for ln in lines})


def print_ops(title: str, ops: collections.Counter, line_names: list[str], top: int) -> None:
    print(f"== {title}: {sum(ops.values()):.3f} ms of device ops per call, {len(ops)} ops"
          f" (trace lines: {', '.join(line_names[:6])})")
    for name, ms in ops.most_common(top):
        print(f"   {ms:7.3f} ms  {name}")
