"""All-reduce bandwidth across the visible devices, alone and beside a GEMM in the same program.

A data-parallel step hides its gradient all-reduce only if the collective's kernel runs while the
step's GEMMs do. XLA can schedule that (the all-reduce starts before the GEMM, the program waits for
it after); whether the devices then really run the two side by side is what this measures:
hidden = (t_all_reduce + t_gemm - t_both) / t_all_reduce, 1 when the all-reduce is fully hidden
under the GEMM, 0 when they run one after the other. `scheduled` says whether the compiled program
put the GEMM between the all-reduce's start and its wait (so a low `hidden` is the device's doing,
not the schedule's). Each device all-reduces its own `mib` MiB bf16 buffer (algbw = MiB / time, as
nccl-tests reports it) and multiplies its own gemm_n^3 bf16 pair.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lowprec.bench.hlo import collective_schedule
from lowprec.bench.report import guarded
from lowprec.bench.timing import gbs, random_sets, time_fn

DEFAULT_SIZES_MIB = (8, 40, 128, 512)
DEFAULT_GEMM_N = 8192
SMALL = {"sizes_mib": (1,), "gemm_n": 256}
COLUMNS = (("case", "case", ""), ("mib", "MiB", ".0f"), ("ms", "ms", ".3f"), ("algbw_gbs", "algbw GB/s", ".0f"),
           ("tflops", "TFLOP/s", ".0f"), ("hidden", "hidden", ".2f"), ("scheduled", "scheduled", ""))


def _programs(mesh: Mesh):
    """(all_reduce, gemm, both): jitted per-device programs over arrays whose axis 0 is the device."""
    def per_device(fn, n_in: int):
        return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P("d"),) * n_in, out_specs=P("d")))

    all_reduce = per_device(lambda buf: jax.lax.psum(buf, "d"), 1)
    gemm = per_device(lambda a, b: (a[0] @ b[0])[None], 2)
    both = jax.jit(lambda buf, a, b: (all_reduce(buf), gemm(a, b)))
    return all_reduce, gemm, both


def _scheduled(compiled_text: str) -> bool:
    """Whether a kernel (the GEMM) runs between the all-reduce's start and the wait for it."""
    schedule = collective_schedule(compiled_text)
    return any(a.done > a.start for a in schedule.all_reduces)


def run_comm(record: Callable[[dict], None], *, sizes_mib: Sequence[float] = DEFAULT_SIZES_MIB,
             gemm_n: int = DEFAULT_GEMM_N, reps: int, key: jax.Array, devices: Sequence | None = None) -> None:
    """Rows: one all_reduce per size, one gemm, then all_reduce+gemm per size with `hidden`."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) < 2:
        raise ValueError(f"lowprec bench comm needs >= 2 devices; found {len(devices)}")
    if gemm_n < 1 or any(not s > 0 for s in sizes_mib):
        raise ValueError(f"gemm_n must be >= 1 and sizes_mib > 0, got {gemm_n} and {list(sizes_mib)}")
    n = len(devices)
    mesh = Mesh(np.asarray(devices), ("d",))
    shard = NamedSharding(mesh, P("d"))
    all_reduce, gemm, both = _programs(mesh)
    shapes = [(n, gemm_n, gemm_n)] * 2 + [(n, max(1, round(mib * 2**20 / 2))) for mib in sizes_mib]
    a, b, *buffers = (jax.device_put(x, shard) for x in random_sets(key, shapes, jnp.bfloat16, n_sets=1)[0])
    bufs = dict(zip(sizes_mib, buffers))
    ar_ms = {}

    def ar_case(mib):
        t = time_fn(all_reduce, [(bufs[mib],)], reps=reps)
        ar_ms[mib] = 1e3 * t.median_s
        return {"ms": ar_ms[mib], "algbw_gbs": gbs(bufs[mib].nbytes / n, t.median_s)}

    for mib in sizes_mib:
        record(guarded({"case": "all_reduce", "mib": float(mib)}, lambda: ar_case(mib)))
    gemm_row = guarded({"case": "gemm"}, lambda: _gemm_case(gemm, a, b, gemm_n, reps))
    record(gemm_row)
    for mib in sizes_mib:
        def both_case():
            if mib not in ar_ms or "ms" not in gemm_row:
                raise RuntimeError("its all_reduce or gemm case failed")
            compiled = both.lower(bufs[mib], a, b).compile()  # timed and read: one compile
            ms = 1e3 * time_fn(compiled, [(bufs[mib], a, b)], reps=reps).median_s
            return {"ms": ms, "hidden": (ar_ms[mib] + gemm_row["ms"] - ms) / ar_ms[mib],
                    "scheduled": _scheduled(compiled.as_text())}

        record(guarded({"case": "all_reduce+gemm", "mib": float(mib)}, both_case))


def _gemm_case(gemm, a, b, gemm_n: int, reps: int) -> dict:
    t = time_fn(gemm, [(a, b)], reps=reps)
    return {"ms": 1e3 * t.median_s, "tflops": 2 * gemm_n**3 / t.median_s / 1e12}
