"""Where a GEMM's time goes on the GPU: device time per HLO op of the compiled forward+backward.

Runs x[M,K] @ w[K,N] (random bf16, value_and_grad against a random cotangent) for bf16, lowprec
recipes and peers, traces `reps` calls with jax.profiler, and prints each program's ops by device
time (ms per call, from the trace's "XLA Ops" line). SHAPE=MxKxN, METHODS=lax_bf16,fp8_tensorwise,...
(the programs of `lowprec bench gemm`: baselines, recipes, peers), MODE=fwd_bwd|fwd, TOP=rows per program.
"""
import collections
import glob
import os
import tempfile

import jax
from jax.profiler import ProfileData

from lowprec.bench.gemm import programs
from lowprec.bench.timing import random_sets


def device_ops(fn, args, reps):
    for _ in range(3):
        jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(reps):
            jax.block_until_ready(fn(*args))
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


def main():
    m, k, n = (int(v) for v in os.environ.get("SHAPE", "8192x8192x8192").split("x"))
    mode, top, reps = os.environ.get("MODE", "fwd_bwd"), int(os.environ.get("TOP", "14")), 5
    (x, w, ct), = random_sets(jax.random.key(0), [(m, k), (k, n), (m, n)], n_sets=1)
    out = os.environ.get("OUT")
    for method in os.environ.get("METHODS", "lax_bf16,fp8_tensorwise_pow2,flax_fp8").split(","):
        fn, prepare = programs(method, mode, jax.random.key(1))
        fn, args = jax.jit(fn), prepare(x, w, ct)
        ops, line_names = device_ops(fn, args, reps)
        if out:
            with open(f"{out}/hlo_{method}_{mode}.txt", "w") as f:
                f.write(fn.lower(*args).compile().as_text())
        print(f"== {method} {mode} {m}x{k}x{n}: {sum(ops.values()):.3f} ms of device ops per call, {len(ops)} ops"
              f" (trace lines: {', '.join(line_names[:6])})")
        for name, ms in ops.most_common(top):
            print(f"   {ms:7.3f} ms  {name}")


if __name__ == "__main__":
    main()
