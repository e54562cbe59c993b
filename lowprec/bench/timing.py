"""Timing primitives shared by every benchmark: warm-up, blocking, medians, rotated inputs, copy bandwidth.

JAX exposes no device events, so time is read on the host with perf_counter after
`jax.block_until_ready`. A blocked call also pays the host's dispatch and synchronisation latency
(~0.1 ms on an H100, as long as a 256 MiB copy), so each timed sample is a round of `inner` calls
dispatched back to back (the device runs them in order) and blocked once at the end, with `inner`
chosen from the warm-up so a round lasts about `round_s`; the sample is the round time / inner,
and the median over `reps` rounds is reported. Calls rotate among several input sets so that
inputs smaller than the GPU's L2 are not served from cache. The device copy that gives each run
its bandwidth ceiling counts bytes read plus bytes written (2 x nbytes).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds per call: median, min and max over `reps` rounds of `inner` back-to-back calls."""

    median_s: float
    min_s: float
    max_s: float
    reps: int
    inner: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_reps(reps: int, warmup: int) -> None:
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (the last warm-up call sizes the timed rounds), got {warmup}")


def time_calls(call: Callable[[int], object], *, reps: int, warmup: int = 3, round_s: float = 0.02,
               max_inner: int = 200) -> Timing:
    """Time `call(i)` (i counts every call made) over `reps` rounds after `warmup` blocked calls."""
    check_reps(reps, warmup)
    i = 0
    for _ in range(warmup):
        t0 = time.perf_counter()
        jax.block_until_ready(call(i))
        last, i = time.perf_counter() - t0, i + 1
    inner = max(1, min(max_inner, int(round_s / max(last, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            out, i = call(i), i + 1
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / inner)
    return Timing(median_s=statistics.median(times), min_s=min(times), max_s=max(times), reps=reps, inner=inner)


def time_fn(fn: Callable, arg_sets: Sequence[tuple], *, reps: int, warmup: int = 3) -> Timing:
    """Median time per call of the (jitted) `fn(*args)`, rotating through `arg_sets` call by call."""
    if not arg_sets:
        raise ValueError("time_fn needs at least one input set")
    return time_calls(lambda i: fn(*arg_sets[i % len(arg_sets)]), reps=reps, warmup=warmup)


def random_sets(key: jax.Array, shapes: Sequence[tuple[int, ...]], dtype=jnp.bfloat16, n_sets: int = 2) -> list[tuple]:
    """`n_sets` tuples of standard-normal arrays (never zeros: zeros hide bugs and run faster)."""
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    keys = jax.random.split(key, n_sets * len(shapes)).reshape(n_sets, len(shapes))
    return [tuple(jax.random.normal(k, s, dtype) for k, s in zip(ks, shapes)) for ks in keys]


def gbs(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e9


def copy_bandwidth(arg_sets: Sequence[tuple], *, reps: int, warmup: int = 3) -> float:
    """GB/s of a jitted device-to-device copy of each set's first array (bytes read + written)."""
    copy = jax.jit(jnp.copy)
    x = arg_sets[0][0]
    if copy(x).unsafe_buffer_pointer() == x.unsafe_buffer_pointer():
        raise RuntimeError("the jitted copy aliased its input; the baseline would time nothing")
    t = time_fn(copy, [(s[0],) for s in arg_sets], reps=reps, warmup=warmup)
    return gbs(2 * x.nbytes, t.median_s)


ENV_PREFIXES = ("XLA_", "JAX_", "NCCL_", "CUDA_VISIBLE_DEVICES")


def device_info() -> dict:
    """The device, the JAX version and the environment variables that change what XLA or NCCL do."""
    d = jax.devices()[0]
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}
    return {"device_kind": d.device_kind, "platform": d.platform, "n_devices": jax.device_count(),
            "jax": jax.__version__, "env": env}
