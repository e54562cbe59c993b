"""Device time per HLO op from a jax.profiler trace (GPU): where a compiled program's time goes.

Used by tools/profile_gemm.py and tools/profile_train.py; not a benchmark (no baseline, no ratios).
`device_ops` sums time per kernel name. Kernel names do not identify instructions (XLA gives
identical fusions one kernel, and command buffers hide the per-op trace line), so `attribute` maps
one call's launches, in order, onto the compiled program's scheduled instructions to give each
launch its instruction, its bytes and the bandwidth it reached.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import re
import tempfile
from typing import Callable

import jax

from lowprec.bench.hlo import Kernel


def _device_planes(call: Callable[[int], object], reps: int, warmup: int):
    """The trace's GPU planes (one per device, by name) over `reps` traced calls of `call(i)`, after
    `warmup` calls."""
    from jax.profiler import ProfileData

    for i in range(warmup):
        jax.block_until_ready(call(i))
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for i in range(warmup, warmup + reps):
            jax.block_until_ready(call(i))
        jax.profiler.stop_trace()
        data = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[-1])
    return sorted((plane for plane in data.planes if plane.name.startswith("/device:GPU")), key=lambda p: p.name)


def device_ops(call: Callable[[int], object], reps: int, warmup: int = 3) -> tuple[collections.Counter, list[str]]:
    """(ms per call of each device op, the trace's device line names) over `reps` traced calls of
    `call(i)` (i counts every call, warm-up included, so donated state can be threaded through)."""
    lines = [line for plane in _device_planes(call, reps, warmup) for line in plane.lines]
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


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch (or memset / memcpy) of a traced call, as the trace names it; start_us from
    the call's first launch."""

    name: str
    us: float
    start_us: float = 0.0


def device_launches(call: Callable[[int], object], warmup: int = 3) -> list[Launch]:
    """The launches of one traced call of `call(i)` on the first GPU's streams, in start order."""
    planes = _device_planes(call, 1, warmup)
    events = sorted((ev for ln in (planes[0].lines if planes else []) if ln.name.startswith("Stream") for ev in ln.events),
                    key=lambda ev: ev.start_ns)
    t0 = events[0].start_ns if events else 0
    return [Launch(ev.name, ev.duration_ns / 1e3, (ev.start_ns - t0) / 1e3) for ev in events]


@dataclasses.dataclass(frozen=True)
class Timeline:
    """A traced call's GPU time: its span (first launch's start to last one's end), the time some
    launch ran (busy; streams overlap), the idle rest, and its longest idle stretches as
    (us, the launch they precede), longest first. A step whose wall time per call, back to back,
    exceeds `span_us` also idles between calls."""

    span_us: float
    busy_us: float
    launches: int
    longest_idle: tuple[tuple[float, str], ...]

    @property
    def idle_us(self) -> float:
        return self.span_us - self.busy_us


def timeline(launches: list[Launch], keep: int = 3) -> Timeline:
    """The `Timeline` of launches (any order) with its `keep` longest idle stretches."""
    if not launches:
        return Timeline(0.0, 0.0, 0, ())
    ordered = sorted(launches, key=lambda l: l.start_us)
    busy, idle, end = 0.0, [], ordered[0].start_us  # end: where the busy time so far stops
    for l in ordered:
        if l.start_us > end:
            idle.append((l.start_us - end, l.name))
        stop = l.start_us + l.us
        busy += max(0.0, stop - max(l.start_us, end))
        end = max(end, stop)
    return Timeline(end - ordered[0].start_us, busy, len(ordered), tuple(sorted(idle, key=lambda g: -g[0])[:keep]))


_COPY = re.compile(r"memset|memcpy", re.IGNORECASE)
_CUBLAS = re.compile(r"nvjet|xmma|cutlass|gemm|gemv|splitk", re.IGNORECASE)
_XLA_KERNEL = re.compile(r"(^(wrapped|loop|input|copy)_|fusion$)")


def _stem(name: str) -> str:
    """A kernel or instruction name without its numeric suffix (XLA names a fusion's kernel after
    the instruction with '.' and '-' as '_', and gives identical fusions the first one's kernel)."""
    return re.sub(r"[._]\d+$", "", name.replace("-", "_"))


def _family(launch: str) -> str:
    """Who launched it: cuDNN, NCCL, cuBLAS, XLA's own kernels (fusions, copies), else "other" (e.g. a
    Pallas kernel, named after its Python function)."""
    if _XLA_KERNEL.search(_stem(launch)):
        return "xla"
    return "cudnn" if "cudnn" in launch else "nccl" if "nccl" in launch.lower() else "cublas" if _CUBLAS.search(launch) else "other"


_COLLECTIVE = ("all-", "reduce-scatter", "collective-permute")


def _matches(launch: str, k: Kernel) -> bool:
    """Whether a launch named `launch` can be instruction k's."""
    family = _family(launch)
    if k.op == "fusion":
        return family in ("xla", "cublas") and _stem(launch) == _stem(k.name)
    if k.op == "custom-call":
        target = "cudnn" if "cudnn" in k.target else "cublas" if "cublas" in k.target else "other"
        return family == target
    if k.op.startswith(_COLLECTIVE):
        return family == "nccl"
    return _stem(launch).startswith(k.op.replace("-", "_"))


def attribute(launches: list[Launch], program: list[Kernel]) -> list[tuple[Launch, Kernel | None]]:
    """Each launch with the instruction that ran it (None where none fits), by walking both in order.

    A fusion's launch carries its kernel name (or that of an identical fusion, same stem); a custom
    call's launches are told apart by family (cuBLAS, cuDNN, else e.g. a Pallas kernel), and a cuDNN
    call may launch several kernels in a row. NCCL launches (their own stream) walk the collectives
    separately. Memsets and memcpys belong to the next instruction; instructions that launch nothing
    are skipped. A heuristic: a mismatch shows as None rows.
    """
    streams = {True: [k for k in program if k.op.startswith(_COLLECTIVE)],
               False: [k for k in program if not k.op.startswith(_COLLECTIVE)]}
    cursor, last = {True: 0, False: 0}, {True: None, False: None}
    rows: list[tuple[Launch, Kernel | None]] = []
    pending: list[Launch] = []
    for launch in launches:
        if _COPY.match(launch.name):
            pending.append(launch)
            continue
        comm = _family(launch.name) == "nccl"
        todo, i, prev = streams[comm], cursor[comm], last[comm]
        if prev is not None and prev.op == "custom-call" and _matches(launch.name, prev) and not (
                i < len(todo) and _matches(launch.name, todo[i])):
            match = prev  # another kernel of the same custom call
        else:
            j = next((j for j in range(i, len(todo)) if _matches(launch.name, todo[j])), None)
            match = None if j is None else todo[j]
            cursor[comm] = i if j is None else j + 1
        rows += [(p, match) for p in pending] + [(launch, match)]
        pending, last[comm] = [], match or prev
    return rows + [(p, None) for p in pending]


def print_launches(title: str, rows: list[tuple[Launch, Kernel | None]], min_us: float) -> None:
    """The launches of at least `min_us`, in order: time, instruction, MB read / written, the
    bandwidth that implies (operands counted whole), result shape and source op."""
    unmatched = sum(k is None for _, k in rows)
    print(f"== {title}: {len(rows)} launches, {sum(l.us for l, _ in rows) / 1e3:.3f} ms, {unmatched} not attributed;"
          f" those of >= {min_us:g} us:")
    for launch, k in rows:
        if launch.us < min_us:
            continue
        if k is None:
            print(f"   {launch.us:8.1f} us  {'?':34s} {launch.name[:60]}")
            continue
        moved = k.in_bytes + k.out_bytes
        print(f"   {launch.us:8.1f} us  {k.name[:34]:34s} in {k.in_bytes / 1e6:7.1f} MB  out {k.out_bytes / 1e6:7.1f} MB"
              f"  {moved / launch.us / 1e6:5.2f} TB/s  {k.shape[:48]:48s} {k.source[-60:]}")
