"""GEMM throughput of lowprec recipes, raw FP8 and peers, against bf16 measured in the same run (issues 3, 7).

Every method computes the Dense product y[M,N] = x[M,K] @ w[K,N] from bf16 x and w:
- fwd:     y alone; FLOPs counted 2·M·N·K.
- fwd_bwd: y and jax.vjp's gradients with respect to x and w (and a peer's scale state) for a
           random bf16 cotangent ct, as a layer sees them in training: the forward, dgrad and
           wgrad GEMMs; FLOPs 6·M·N·K. (Until 2026-11-23 the gradient of sum(y·ct) was timed; XLA
           then fused that f32 product into the quantizers' dY pass: experiments/bench/NOTES.md.)
Baselines: `lax_bf16` (lax.dot_general, bf16 out, f32 accumulation) and `lax_fp8_raw` (operands
cast to e4m3, gradients to e5m2, once and outside the timing, each GEMM arranged with both
operands contraction-major, f32 out: the FP8 tensor-core ceiling with no quantization cost).
`fp8_gemms` counts the compiled program's GEMMs on FP8 operands (cuBLASLt FP8 calls and Triton GEMM
fusions, `lowprec.bench.hlo`): who really runs FP8.
`rel_err` (fwd) is ||y - y_ref|| / ||y_ref|| against an f32-output bf16 product.
Delayed-scaling recipes start from empty histories (so each call scales as current scaling does, at
the same cost) and return their updated state.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from lowprec import recipes
from lowprec.bench.hlo import count_fp8_gemms
from lowprec.bench.peers import DENSE_DIMS, PEERS
from lowprec.bench.report import guarded
from lowprec.bench.timing import random_sets, time_fn
from lowprec.gemm.delayed import delayed_dot_general, init_state

MODES = ("fwd", "fwd_bwd")
FLOP_FACTOR = {"fwd": 2, "fwd_bwd": 6}
BASELINES = ("lax_bf16", "lax_fp8_raw")
DEFAULT_SHAPES = ((8192, 8192, 8192), (16384, 1024, 4096), (16384, 2048, 8192), (16384, 4096, 4096),
                  (16384, 8192, 8192))
SMALL_SHAPES = ((256, 256, 256), (512, 128, 256))
TN = (((1,), (1,)), ((), ()))
COLUMNS = (("shape", "M,K,N", ""), ("mode", "mode", ""), ("method", "method", ""), ("ms", "ms", ".3f"),
           ("tflops", "TFLOP/s", ".0f"), ("vs_bf16", "vs bf16", ".2f"), ("fp8_gemms", "fp8", ""),
           ("rel_err", "rel err", ".1e"), ("compile_s", "compile s", ".1f"))


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """"8192x8192x8192,16384x2048x8192" or "8192,8192,8192;16384,2048,8192" -> [(M, K, N), ...]."""
    items = text.replace(",", " ").split() if "x" in text else text.replace(";", " ").split()
    shapes = []
    for item in items:
        try:
            dims = tuple(int(p) for p in item.replace("x", ",").split(","))
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"--shapes takes MxKxN (or M,K,N separated by ';') triples of positive integers, "
                             f"got {item!r} in {text!r}")
        shapes.append(dims)
    if not shapes:
        raise ValueError(f"--shapes got no shape in {text!r}")
    return shapes


def _dense_programs(dot: Callable, init: Callable, mode: str, key, aux: bool = False) -> tuple[Callable, Callable]:
    """(fn, prepare) for a dot(x, w, state) -> y (or (y, new state) when `aux`, returned so its
    updates are timed too): prepare(x, w, ct) gives fn's arguments."""
    if mode == "fwd":
        return (lambda x, w, ct, state: dot(x, w, state)), (lambda x, w, ct: (x, w, ct, init(x, w)))

    def fwd_bwd(x, w, state, ct):
        with_aux = dot if aux else (lambda x, w, state: (dot(x, w, state), ()))
        y, vjp, new = jax.vjp(with_aux, x, w, state, has_aux=True)
        return y, vjp(ct.astype(y.dtype)), new

    return fwd_bwd, (lambda x, w, ct: (x, w, init(x, w), ct))


def _raw_fp8_programs(mode: str) -> tuple[Callable, Callable]:
    e4, e5 = jnp.float8_e4m3fn, jnp.float8_e5m2

    def prepare(x, w, ct):
        ops = (x.astype(e4), w.T.astype(e4))
        if mode == "fwd_bwd":  # dgrad: ct[M,N] · w[K,N] over N; wgrad: ctᵀ[N,M] · xᵀ[K,M] over M
            ops += (ct.astype(e5), w.astype(e4), ct.T.astype(e5), x.T.astype(e4))
        return jax.block_until_ready(ops)

    def fn(*ops):
        pairs = [ops[i:i + 2] for i in range(0, len(ops), 2)]
        return [lax.dot_general(a, b, TN, preferred_element_type=jnp.float32) for a, b in pairs]

    return fn, prepare


def programs(method: str, mode: str, key: jax.Array) -> tuple[Callable, Callable]:
    """(fn, prepare) of a baseline, lowprec recipe or peer for `mode` ("fwd" / "fwd_bwd")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if method == "lax_fp8_raw":
        return _raw_fp8_programs(mode)
    if method == "lax_bf16":
        dot, init = (lambda x, w, state: lax.dot_general(x, w, DENSE_DIMS)), (lambda x, w: ())
    elif method in PEERS:
        dot, init = PEERS[method]()
    else:
        recipe = recipes.get(method)
        if recipe.delayed is not None:
            return _dense_programs(_delayed_dot(recipe), lambda x, w: init_state(recipe), mode, key, aux=True)
        qdot = recipe.dot_general(key if recipe.needs_key else None)
        dot, init = (lambda x, w, state: qdot(x, w, DENSE_DIMS)), (lambda x, w: ())
    return _dense_programs(dot, init, mode, key)


def _delayed_dot(recipe):
    """dot(x, w, state) -> (y, state with the forward's histories), the backward's in the state gradient."""
    return lambda x, w, state: delayed_dot_general(x, w, DENSE_DIMS, recipe=recipe, state=state)


def check_methods(methods: Sequence[str]) -> None:
    for m in methods:
        if m not in BASELINES and m not in PEERS:
            recipes.get(m)  # raises ValueError listing the valid recipe names


def _case(method: str, mode: str, shape, arg_sets, y_ref, key, reps: int) -> dict:
    m, k, n = shape
    fn, prepare = programs(method, mode, key)
    prepared = [prepare(*s) for s in arg_sets]
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*prepared[0]).compile()
    compile_s = time.perf_counter() - t0
    t = time_fn(compiled, prepared, reps=reps)
    out = {"ms": 1e3 * t.median_s, "tflops": FLOP_FACTOR[mode] * m * n * k / t.median_s / 1e12,
           "fp8_gemms": count_fp8_gemms(compiled.as_text()), "spread": t.max_s / t.min_s, "compile_s": compile_s}
    if mode == "fwd":
        y = compiled(*prepared[0])
        y = (y[0] if isinstance(y, (list, tuple)) else y).astype(jnp.float32)  # raw fp8's GEMMs, delayed's state
        out["rel_err"] = float(jnp.linalg.norm(y - y_ref) / jnp.linalg.norm(y_ref))
    return out


def run_gemm(record: Callable[[dict], None], *, shapes: Sequence[tuple[int, int, int]], methods: Sequence[str],
             modes: Sequence[str] = MODES, reps: int, key: jax.Array, n_sets: int = 2,
             deadline: float | None = None) -> None:
    """One row per (shape, mode, method), passed to `record` when done; lax_bf16 always runs first.

    Cases that would start after `deadline` (time.monotonic) are recorded as skipped.
    """
    check_methods(methods)
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    methods = ["lax_bf16"] + [m for m in methods if m != "lax_bf16"]
    for shape in shapes:
        m, k, n = shape
        k_data, k_sr, key = jax.random.split(key, 3)
        arg_sets = random_sets(k_data, [(m, k), (k, n), (m, n)], jnp.bfloat16, n_sets)
        x, w, _ = arg_sets[0]
        y_ref = lax.dot_general(x, w, DENSE_DIMS, preferred_element_type=jnp.float32)
        for mode in modes:
            bf16_tflops = None
            for method in methods:
                fields = {"shape": f"{m},{k},{n}", "mode": mode, "method": method}
                if deadline is not None and time.monotonic() > deadline:
                    record({**fields, "error": "skipped: time budget spent"})
                    continue
                row = guarded(fields, lambda: _case(method, mode, shape, arg_sets, y_ref, k_sr, reps))
                if method == "lax_bf16":
                    bf16_tflops = row.get("tflops")
                if "tflops" in row and bf16_tflops:
                    row["vs_bf16"] = row["tflops"] / bf16_tflops
                record(row)
        del arg_sets, y_ref
