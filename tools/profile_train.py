"""Where a training step's time goes on the GPU: device time per HLO op of the compiled step.

Builds the step as `lowprec bench train` does (synthetic corpus, the real jitted donated step),
traces `reps` steps and prints the ops by device time, plus totals by op kind (GEMM kernels vs
fusion kinds). MODEL=1b, RECIPES=bf16,fp8_tensorwise_pow2, BATCH=8, SEQ_LEN=2048, TOP=rows,
SET="model.n_layers=4 ..." (extra overrides), OUT=dir for the compiled HLO text. A step that spans
several devices (SET="mesh.data=2") also prints where its all-reduces sit among its kernels.
LAUNCHES=us: also trace one more step and print its launches of at least that many microseconds, in
order, each with its HLO instruction, the bytes it moves and the bandwidth that implies.
Every recipe also prints its wall time per step (rounds of back-to-back steps, as `lowprec bench
train` times them) beside one traced step's span, the time its launches ran and the idle rest (the
longest stretches with the launch they precede).
"""
import collections
import os
import re
import tempfile
from pathlib import Path

from lowprec.bench.hlo import collective_schedule, fp8_fusions, kernels
from lowprec.bench.profile import attribute, device_launches, device_ops, print_launches, print_ops, timeline
from lowprec.bench.timing import time_calls
from lowprec.bench.train import ROUND_S, compile_step, synthetic_corpus_for
from lowprec.models import load_model_config


def kind(op: str, fp8: set[str]) -> str:
    """GEMM kernels (cuBLAS nvjet / Triton gemm fusions; `fp8`: the fusions on FP8 operands), attention
    kernels, else the fusion kind."""
    if op.startswith(("nvjet", "cublas", "gemm_fusion")) or "gemm" in op:
        return "gemm (FP8 operands)" if op in fp8 or re.search(r"_(qq|qr|rq)tst_", op) else "gemm bf16"
    if "sdpa" in op or "fmha" in op or "cudnn" in op:
        return "attention (cuDNN)"
    return re.sub(r"[._]\d+$", "", op)


def main():
    model, batch, seq_len = os.environ.get("MODEL", "1b"), int(os.environ.get("BATCH", "8")), int(os.environ.get("SEQ_LEN", "2048"))
    top, out, overrides = int(os.environ.get("TOP", "25")), os.environ.get("OUT"), os.environ.get("SET", "").split()
    launches_us = os.environ.get("LAUNCHES")
    corpus = synthetic_corpus_for(Path(tempfile.mkdtemp()), vocab_size=load_model_config(model).vocab_size,
                                  seq_len=seq_len, batch=batch)
    for recipe in os.environ.get("RECIPES", "bf16,fp8_tensorwise_pow2").split(","):
        step = compile_step(model, recipe, corpus=corpus, batch=batch, seq_len=seq_len, overrides=overrides)
        if out:
            Path(out, f"hlo_train_{recipe}.txt").write_text(step.executable.as_text())
        ops, line_names = device_ops(step.call, reps=3)
        fp8, kinds = fp8_fusions(step.executable.as_text()), collections.Counter()
        for op, ms in ops.items():
            kinds[kind(op, fp8)] += ms
        print_ops(f"{recipe} {model} {' '.join(overrides)} B={batch} T={seq_len} (compile {step.compile_s:.0f} s)",
                  ops, line_names, top)
        for k, ms in kinds.most_common(10):
            print(f"   kind {ms:7.3f} ms  {k}")
        if step.run.mesh.size > 1:
            print("   schedule:", collective_schedule(step.executable.as_text()).summary())
        launches = device_launches(step.call, warmup=0)
        t, wall = timeline(launches), time_calls(step.call, reps=5, warmup=1, round_s=ROUND_S).median_s * 1e3
        print(f"   wall {wall:.2f} ms per step back to back; one traced step: span {t.span_us / 1e3:.2f} ms, "
              f"launches ran {t.busy_us / 1e3:.2f} ms ({t.launches}), idle {t.idle_us / 1e3:.2f} ms, longest: "
              + ", ".join(f"{us / 1e3:.2f} ms before {name[:40]}" for us, name in t.longest_idle))
        if launches_us is not None:
            rows = attribute(launches, kernels(step.executable.as_text()))
            print_launches(f"{recipe} launches of one step", rows, float(launches_us))


if __name__ == "__main__":
    main()
