"""Training-step throughput and MFU per model preset and recipe (issues 5, 7).

Each case builds the real run with lowprec.train.setup.build (model, precision rules, sharded
state, the jitted donated train step) on a synthetic uniform-token corpus written once per
model, compiles the step ahead of time, runs `warmup` steps, then times `steps` rounds of about
ROUND_S seconds of back-to-back steps with lowprec.bench.timing.time_calls and reports the median
step time. Rounds of several steps measure what the training loop gets: it dispatches step i+1
before it reads step i's metrics, so a step's host dispatch (2-8 ms at 1b, growing with its kernel
launches) overlaps the previous step's device work. Blocking after every step would add that
dispatch to each sample, and more to the recipes with more launches. Batches rotate
between the first two of the dataset. tokens/s = batch x seq_len / median step time; MFU uses
lowprec.train.mfu with the model's training FLOPs per token (lowprec.models.flops_per_token),
against the bf16 dense peak for every recipe, so rows compare directly. Peer rows (`peers`, see
lowprec.bench.train_peers) run the bf16 case with the projections computed by a peer FP8 library.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from lowprec.bench.report import guarded
from lowprec.bench.timing import time_calls

DEFAULT_MODELS = ("350m",)
DEFAULT_RECIPES = ("bf16", "fp8_tensorwise", "fp8_rowwise", "mxfp8", "nvfp4", "quartet", "mxfp4_bwd")
SMALL = {"models": ("tiny",), "batch": 4, "seq_len": 64, "overrides": ("model.n_layers=1",)}
ROUND_S = 1.0
COLUMNS = (("model", "model", ""), ("recipe", "recipe/peer", ""), ("batch", "B", ""), ("seq_len", "T", ""),
           ("step_ms", "ms/step", ".1f"), ("tokens_per_s", "tokens/s", ".0f"), ("vs_bf16", "vs bf16", ".2f"),
           ("mfu_pct", "MFU %", ".1f"), ("compile_s", "compile s", ".1f"), ("loss", "loss", ".3f"))


def synthetic_corpus_for(workdir: Path, *, vocab_size: int, seq_len: int, batch: int, seed: int = 0) -> Path:
    """A uniform-token corpus with two batches of train windows and one val window."""
    from lowprec.data.synthetic import synthetic_corpus

    out = workdir / f"corpus_v{vocab_size}_t{seq_len}_b{batch}"
    if not (out / "meta.json").exists():
        synthetic_corpus(out, n_tokens=2 * batch * seq_len + 1, vocab_size=vocab_size, seed=seed, kind="uniform",
                         val_tokens=seq_len + 1)
    return out


@dataclasses.dataclass
class CompiledStep:
    """A run's train step compiled ahead of time; `call(i)` runs step i on batch i % 2, threading
    the donated state (i counts every call, so timing rounds of several calls fit)."""

    cfg: object
    run: object
    executable: object  # jax.stages.Compiled
    compile_s: float
    call: Callable[[int], tuple]
    metrics: Callable[[], dict]


def compile_step(model: str, recipe: str, *, corpus: Path, batch: int, seq_len: int, overrides: Sequence[str] = (),
                 peer: str | None = None) -> CompiledStep:
    from lowprec.bench.train_peers import plug
    from lowprec.train.config import load_config
    from lowprec.train.setup import build

    cfg = load_config(overrides=[f"model={model}", f"model.seq_len={seq_len}", f"data.batch_size={batch}",
                                 f"data.corpus={corpus}", f"data.val_tokens={seq_len}", f"precision.recipe={recipe}",
                                 "train.steps=1000", *overrides])
    run = build(cfg, None if peer is None else lambda m: plug(peer, m))
    batches = [jax.device_put(run.dataset[i], run.shardings["batch"]) for i in range(2)]
    t0 = time.perf_counter()
    step_fn = run.train_step.lower(run.state, run.opt_state, batches[0], jnp.asarray(0, jnp.int32)).compile()
    compile_s = time.perf_counter() - t0
    carry = {"state": run.state, "opt": run.opt_state, "metrics": None}

    def call(i):
        carry["state"], carry["opt"], carry["metrics"] = step_fn(carry["state"], carry["opt"], batches[i % 2],
                                                                 jnp.asarray(i, jnp.int32))
        return carry["state"], carry["metrics"]

    return CompiledStep(cfg=cfg, run=run, executable=step_fn, compile_s=compile_s, call=call,
                        metrics=lambda: carry["metrics"])


def _case(model: str, recipe: str, *, corpus: Path, batch: int, seq_len: int, steps: int, warmup: int,
          overrides: Sequence[str], peer: str | None = None) -> dict:
    from lowprec.models import flops_per_token
    from lowprec.train.mfu import mfu

    step = compile_step(model, recipe, corpus=corpus, batch=batch, seq_len=seq_len, overrides=overrides, peer=peer)
    cfg, run, compile_s = step.cfg, step.run, step.compile_s
    t = time_calls(step.call, reps=steps, warmup=warmup, round_s=ROUND_S)
    loss = float(step.metrics()["loss"])
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss} after {warmup + steps} steps")
    tokens_per_s = batch * seq_len / t.median_s
    fpt = flops_per_token(cfg.model)["total"]
    device = jax.devices()[0].device_kind
    util = {peak: mfu(fpt, tokens_per_s, device, run.mesh.size, peak) for peak in ("bf16", "fp8")}
    return {"step_ms": 1e3 * t.median_s, "tokens_per_s": tokens_per_s, "flops_per_token": fpt,
            "mfu_pct": None if util["bf16"] is None else 100 * util["bf16"],
            "mfu_fp8_peak_pct": None if util["fp8"] is None else 100 * util["fp8"],
            "compile_s": compile_s, "loss": loss, "spread": t.max_s / t.min_s, "n_devices": run.mesh.size}


def run_train(record: Callable[[dict], None], *, models: Sequence[str], recipe_names: Sequence[str], batch: int,
              seq_len: int, steps: int, warmup: int, workdir: str | Path, overrides: Sequence[str] = (),
              deadline: float | None = None, peers: Sequence[str] = ()) -> None:
    """One row per (model, recipe), bf16 first so every row gets its ratio to bf16, then one per peer
    (`recipe` = the peer's name: the bf16 case with its projections run by that peer).

    `overrides` are extra `key=value` config overrides applied to every case (e.g. model.n_layers=1).
    """
    from lowprec import recipes
    from lowprec.bench.train_peers import check
    from lowprec.models import load_model_config

    for name in recipe_names:
        recipes.get(name)
    check(peers)
    if batch < 1 or seq_len < 2:
        raise ValueError(f"batch must be >= 1 and seq_len >= 2, got batch={batch}, seq_len={seq_len}")
    ordered = ["bf16"] + [r for r in recipe_names if r != "bf16"]
    cases = [(r, None) for r in ordered] + [("bf16", p) for p in peers]  # (recipe, peer)
    for model in models:
        vocab = load_model_config(model).vocab_size
        corpus = synthetic_corpus_for(Path(workdir), vocab_size=vocab, seq_len=seq_len, batch=batch)
        bf16_rate = None
        for recipe, peer in cases:
            fields = {"model": model, "recipe": peer or recipe, "batch": batch, "seq_len": seq_len}
            if deadline is not None and time.monotonic() > deadline:
                record({**fields, "error": "skipped: time budget spent"})
                continue
            row = guarded(fields, lambda: _case(model, recipe, corpus=corpus, batch=batch, seq_len=seq_len,
                                                steps=steps, warmup=warmup, overrides=overrides, peer=peer))
            if recipe == "bf16" and peer is None:
                bf16_rate = row.get("tokens_per_s")
            if "tokens_per_s" in row and bf16_rate:
                row["vs_bf16"] = row["tokens_per_s"] / bf16_rate
            record(row)
