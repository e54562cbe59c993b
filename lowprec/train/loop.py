"""`train(cfg) -> summary`: the training loop with eval, logging, checkpoints, divergence and resume.

Steps are numbered from 1: row `step k` reports the loss of the k-th step and checkpoint k holds
the state after k updates. The host dispatches step k+1 before reading step k's metrics, so it
never stalls the device, except at eval/checkpoint boundaries where the state itself is needed.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from lowprec.data.dataset import epoch_of_step, train_iterator
from lowprec.models import flops_per_token, param_counts
from lowprec.train import checkpoint
from lowprec.train.config import ADDED_KEYS, Config, default_tree, dump_config
from lowprec.train.divergence import LossWatch, watch
from lowprec.train.mfu import format_mfu, mfu
from lowprec.train.precision import check_recipe
from lowprec.train.runlog import RunLog, format_line
from lowprec.train.setup import Run, build
from lowprec.typedconfig import to_dict

# config keys that may change between the invocations of a resumed run: they do not touch the trajectory
RESUME_MUTABLE = ("train.stop_at_step", "train.log_every", "train.eval_every", "train.ckpt_every", "train.keep_last",
                  "train.tensorboard")


def _flat_keys(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_resume_config(saved: dict, cfg: Config) -> None:
    """Raise unless cfg is the saved run's config, up to RESUME_MUTABLE keys. An ADDED_KEYS key that
    the saved config lacks counts as its default there (the behaviour the run had)."""
    new, defaults = _flat_keys(to_dict(cfg)), _flat_keys(default_tree())
    old = {k: defaults[k] for k in ADDED_KEYS} | _flat_keys(saved)
    changed = sorted(k for k in old.keys() | new.keys() if k not in RESUME_MUTABLE and old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"{cfg.train.run_dir} holds a checkpoint of a different config (changed: {', '.join(changed)}); "
                         f"use another train.run_dir")


def evaluate(run: Run, state: dict) -> tuple[float, float]:
    """(val loss in nats/token, bits per byte) over the fixed validation batches."""
    total, count = 0.0, 0.0
    for batch in run.val:
        s, n = run.eval_step(state, batch)
        total, count = total + float(s), count + float(n)
    loss = total / count
    return loss, loss / math.log(2) / run.bytes_per_token


def _meta(cfg: Config, step: int, data_state: dict) -> dict:
    return {"step": step, "config": to_dict(cfg), "data_iterator": data_state}


def _data_iterator(run: Run, start: int, saved: dict | None):
    """The grain iterator over training batches, restored to `saved` (a checkpoint's state).

    The batch of step t is a pure function of (data.seed, t), so the restored position must be
    `start`; a mismatch means the checkpoint and the data no longer agree, and is an error.
    """
    it = train_iterator(run.data)
    state = saved if saved is not None else {"next_index": start}
    it.set_state(state)
    if it.get_state() != {"next_index": start}:
        raise ValueError(f"checkpoint data-iterator state {state} does not match step {start}")
    return it


def train(cfg: Config) -> dict:
    """Train per `cfg`, resuming from run_dir's latest checkpoint; returns (and writes) summary.json."""
    t0 = time.perf_counter()
    check_recipe(cfg.precision)
    run_dir = Path(cfg.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mgr = checkpoint.manager(run_dir / "ckpt", cfg.train.keep_last)
    start = mgr.latest_step() or 0
    saved_meta = checkpoint.read_meta(mgr, start) if start else {}
    if start:
        _check_resume_config(saved_meta["config"], cfg)
    run = build(cfg)
    state, opt_state = run.state, run.opt_state
    sh = run.shardings
    if start:
        target = checkpoint.abstract({"state": state, "opt": opt_state}, {"state": sh["state"], "opt": sh["opt"]})
        state, opt_state = checkpoint.restore(mgr, start, target)
    (run_dir / "config.yaml").write_text(dump_config(cfg))

    end = cfg.train.stop_at_step or cfg.train.steps
    if start > end:
        raise ValueError(f"{run_dir} has a checkpoint at step {start}, beyond train.stop_at_step={end}")
    counts, fpt = param_counts(cfg.model), flops_per_token(cfg.model)
    device = jax.devices()[0].device_kind
    peak_dtype = cfg.precision.mfu_peak
    tokens_per_step = cfg.data.batch_size * cfg.model.seq_len
    log = RunLog(run_dir, total_steps=cfg.train.steps, start_step=start, tensorboard=cfg.train.tensorboard)
    log.truncate_after(start)
    log.print(f"run {run_dir} | recipe {cfg.precision.recipe} | {run.mesh.size} x {device} | mesh {dict(run.mesh.shape)}"
              + (f" | resumed at step {start}" if start else ""))
    log.print(f"params: total {counts['total']:,} | non-embedding N {counts['non_embedding']:,} | "
              f"matmul {counts['matmul']:,}")
    if run.precision_table is not None:
        (run_dir / "precision.txt").write_text(run.precision_table + "\n")
        log.print(f"precision (per layer in {run_dir / 'precision.txt'}): {run.precision_table.splitlines()[-1]}")
    log.print(f"FLOPs/token {fpt['total']:.4g} = 6*N_matmul {fpt['matmul']:.4g} (lm_head included) + attention "
              f"12*L*H*d_head*T {fpt['attention']:.4g} (causal half not removed)")

    step_arr = lambda k: jnp.asarray(k, jnp.int32)  # noqa: E731
    batches = _data_iterator(run, start, saved_meta.get("data_iterator"))
    tc = time.perf_counter()
    example = jax.device_put(run.dataset[start], sh["batch"])
    step_fn = run.train_step.lower(state, opt_state, example, step_arr(start)).compile()
    compile_s = time.perf_counter() - tc
    log.print(f"compiled train step in {compile_s:.1f} s")

    watch_state, status, diverged_at, done = LossWatch(), "ok", None, start
    last = {"loss": None, "val_loss": None, "val_bpb": None}
    train_s, paused = 0.0, 0.0
    t_mark, k_mark = time.perf_counter(), start

    def handle(k: int, metrics: dict) -> bool:
        """Fetch step k's metrics, check divergence, log; True when the run must stop."""
        nonlocal watch_state, status, diverged_at, t_mark, k_mark, train_s, paused, done
        m = {name: float(v) for name, v in jax.device_get(metrics).items()}
        done = k
        log.advance()
        watch_state, verdict = watch(watch_state, m["loss"], m["gnorm"], spike_factor=cfg.train.spike_factor,
                                     spike_patience=cfg.train.spike_patience)
        last["loss"] = m["loss"]
        if k % cfg.train.log_every == 0 or k == end or verdict:
            now = time.perf_counter()
            dt = max(now - t_mark - paused, 1e-9)
            train_s += dt
            tok_s = (k - k_mark) * tokens_per_step / dt
            util = mfu(fpt["total"], tok_s, device, run.mesh.size, peak_dtype)
            row = {"step": k, "tokens": k * tokens_per_step, **m, "tok_per_s": tok_s, "mfu": util,
                   "s_per_step": dt / max(k - k_mark, 1), "wall_s": now - t0}
            log.row(row)
            log.print(format_line(row, cfg.train.steps, format_mfu(util, peak_dtype)))
            t_mark, k_mark, paused = now, k, 0.0
        if verdict:
            status, diverged_at = verdict, k
            log.print(f"step {k}: run {verdict} (loss {m['loss']}, gnorm {m['gnorm']}); keeping the last good checkpoint")
        return verdict is not None

    def boundary(k: int, state, opt_state) -> None:
        """Eval and/or checkpoint after step k, excluded from the throughput timing."""
        nonlocal paused
        tb = time.perf_counter()
        if k == end or (cfg.train.eval_every and k % cfg.train.eval_every == 0):
            last["val_loss"], last["val_bpb"] = evaluate(run, state)
            log.row({"step": k, "tokens": k * tokens_per_step, "val_loss": last["val_loss"], "val_bpb": last["val_bpb"]})
            log.print(f"step {k}/{cfg.train.steps} | val_loss {last['val_loss']:.4f} | val_bpb {last['val_bpb']:.4f}")
        if k == end or (cfg.train.ckpt_every and k % cfg.train.ckpt_every == 0):
            checkpoint.save(mgr, k, {"state": state, "opt": opt_state}, _meta(cfg, k, batches.get_state()))
        paused += time.perf_counter() - tb

    pending = None
    for i in range(start, end):
        k = i + 1
        state, opt_state, metrics = step_fn(state, opt_state, jax.device_put(next(batches), sh["batch"]), step_arr(i))
        if pending is not None and handle(*pending):
            pending = None
            break
        pending = (k, metrics)
        if k == end or any(n and k % n == 0 for n in (cfg.train.eval_every, cfg.train.ckpt_every)):
            pending = None
            if handle(k, metrics):
                break
            boundary(k, state, opt_state)
    if pending is not None:
        handle(*pending)
    if start == end:  # resumed a finished run: only refresh the final eval
        last["val_loss"], last["val_bpb"] = evaluate(run, state)
    log.close()

    if status == "ok" and end < cfg.train.steps:
        status = "stopped"
    tokens = done * tokens_per_step
    tok_s = (done - start) * tokens_per_step / train_s if train_s > 0 else None
    summary = {
        "status": status, "diverged_at_step": diverged_at, "steps": cfg.train.steps, "steps_done": done,
        "final_train_loss": last["loss"], "final_train_loss_ema": watch_state.ema,
        "final_val_loss": last["val_loss"], "final_val_bpb": last["val_bpb"],
        "tokens": tokens, "epochs_over_corpus": epoch_of_step(run.data, done),
        "flops": fpt["total"] * tokens, "flops_6nd": 6 * counts["non_embedding"] * tokens,
        "flops_per_token": fpt["total"], "n_params": counts["non_embedding"], "n_params_total": counts["total"],
        "recipe": cfg.precision.recipe, "tokens_per_s": tok_s,
        "mfu": None if tok_s is None else mfu(fpt["total"], tok_s, device, run.mesh.size, peak_dtype),
        "mfu_peak": peak_dtype, "device": device, "n_devices": run.mesh.size, "compile_s": compile_s,
        "wall_s": time.perf_counter() - t0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
