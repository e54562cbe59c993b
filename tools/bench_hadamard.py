"""Time the matmul and butterfly Hadamard implementations on the current device.

x is [16384, 4096] bf16 (--small: [256, 512]); each transform is jitted, warmed up, and
timed as the median of --iters calls with block_until_ready. Bandwidth counts bytes read
plus written (2·x.nbytes); "vs copy" is that bandwidth over a jitted device copy of x
measured in the same run. Usage:

    .venv/bin/python tools/bench_hadamard.py [--small] [--axes -1 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lowprec.transforms import HadamardSpec, apply_hadamard

SIZES = (16, 32, 64, 128, 256)
IMPLS = ("matmul", "butterfly")


def median_seconds(fn, x, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn(x).block_until_ready()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(shape, sizes, axes, iters: int, signs: str) -> tuple[float, list[dict]]:
    """Return (copy GB/s, rows); each row times one (axis, size, impl)."""
    x = jax.random.normal(jax.random.key(0), shape, jnp.bfloat16)
    nbytes = 2 * x.nbytes
    copy = jax.jit(jnp.copy)
    if copy(x).unsafe_buffer_pointer() == x.unsafe_buffer_pointer():
        raise RuntimeError("jitted copy aliased its input; the baseline would time nothing")
    copy_gbs = nbytes / median_seconds(copy, x, iters) / 1e9
    key = jax.random.key(1) if signs == "per_call" else None
    rows = []
    for axis in axes:
        for size in sizes:
            outs = {}
            for impl in IMPLS:
                spec = HadamardSpec(size=size, signs=signs, impl=impl)
                fn = jax.jit(lambda v, spec=spec: apply_hadamard(v, spec, axis=axis, key=key))
                t = median_seconds(fn, x, iters)
                outs[impl] = np.asarray(fn(x), np.float32)
                gbs = nbytes / t / 1e9
                rows.append(dict(axis=axis, size=size, impl=impl, ms=t * 1e3, gbs=gbs, vs_copy=gbs / copy_gbs))
            rows[-1]["max_abs_diff_vs_matmul"] = float(np.max(np.abs(outs["butterfly"] - outs["matmul"])))
    return copy_gbs, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="x of shape [256, 512] (CPU smoke run)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per case (median reported)")
    parser.add_argument("--axes", type=int, nargs="+", default=[-1, 0],
                        help="axes to rotate: -1 = d (forward K), 0 = tokens (wgrad K)")
    parser.add_argument("--signs", choices=("none", "per_call"), default="none")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.iters < 1:
        parser.error(f"--iters must be >= 1, got {args.iters}")
    shape = (256, 512) if args.small else (16384, 4096)
    copy_gbs, rows = bench(shape, SIZES, args.axes, args.iters, args.signs)
    print(f"device: {jax.devices()[0].device_kind}  x: {list(shape)} bf16  signs: {args.signs}  "
          f"median of {args.iters}")
    print(f"device copy: {copy_gbs:.1f} GB/s (read + write)")
    print(f"{'axis':>4} {'size':>4} {'impl':>9} {'ms':>9} {'GB/s':>8} {'vs copy':>8} {'|bfly-mm|':>10}")
    for r in rows:
        diff = f"{r['max_abs_diff_vs_matmul']:.2e}" if "max_abs_diff_vs_matmul" in r else ""
        print(f"{r['axis']:>4} {r['size']:>4} {r['impl']:>9} {r['ms']:>9.3f} {r['gbs']:>8.1f} "
              f"{r['vs_copy']:>8.2f} {diff:>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=jax.devices()[0].device_kind, shape=list(shape), signs=args.signs,
                           copy_gbs=copy_gbs, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
