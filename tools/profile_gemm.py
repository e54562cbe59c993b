"""Where a GEMM's time goes on the GPU: device time per HLO op of the compiled forward+backward.

Runs x[M,K] @ w[K,N] (random bf16, value_and_grad against a random cotangent) for bf16, lowprec
recipes and peers, traces `reps` calls with jax.profiler, and prints each program's ops by device
time (ms per call, from the trace's "XLA Ops" line). SHAPE=MxKxN, METHODS=lax_bf16,fp8_tensorwise,...
(the programs of `lowprec bench gemm`: baselines, recipes, peers), MODE=fwd_bwd|fwd, TOP=rows per program.
"""
import os

import jax

from lowprec.bench.gemm import programs
from lowprec.bench.profile import device_ops, print_ops
from lowprec.bench.timing import random_sets


def main():
    m, k, n = (int(v) for v in os.environ.get("SHAPE", "8192x8192x8192").split("x"))
    mode, top, reps = os.environ.get("MODE", "fwd_bwd"), int(os.environ.get("TOP", "14")), 5
    (x, w, ct), = random_sets(jax.random.key(0), [(m, k), (k, n), (m, n)], n_sets=1)
    out = os.environ.get("OUT")
    for method in os.environ.get("METHODS", "lax_bf16,fp8_tensorwise_pow2,flax_fp8").split(","):
        fn, prepare = programs(method, mode, jax.random.key(1))
        fn, args = jax.jit(fn), prepare(x, w, ct)
        ops, line_names = device_ops(lambda i: fn(*args), reps)
        if out:
            with open(f"{out}/hlo_{method}_{mode}.txt", "w") as f:
                f.write(fn.lower(*args).compile().as_text())
        print_ops(f"{method} {mode} {m}x{k}x{n}", ops, line_names, top)


if __name__ == "__main__":
    main()
