"""One runs-table row per run: the plan's axis values, the recipe's formats and the run's summary.

Fixed columns first (run_id, recipe, n_params, n_params_total, tokens, flops, final_val_loss,
status), then the rest. status is "ok", "diverged" (the loop's "nan" or loss-spike verdicts; the
`divergence` column keeps which) or "failed" (an exception; `error` holds its message).
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import lowprec
from lowprec import recipes
from lowprec.models import flops_per_token, param_counts
from lowprec.numerics.formats import FloatFormat
from lowprec.sweeps.plan import PlannedRun, config_hash

FINAL_STATUSES = ("ok", "nan", "diverged")  # summary.json statuses of a finished run
UNQUANTIZED_BITS = 16
SUMMARY_COLUMNS = ("final_train_loss", "final_val_bpb", "diverged_at_step", "tokens_per_s", "mfu", "wall_s",
                   "device", "epochs_over_corpus", "flops_6nd")


@functools.cache
def code_version() -> str:
    """The git commit of the lowprec checkout (with '+dirty' for local changes), else the package version."""
    root = Path(lowprec.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"lowprec {lowprec.__version__}"
    return sha + ("+dirty" if dirty else "")


def recipe_columns(name: str) -> dict:
    """Per-GEMM operand formats, bits_w/a/g and the (exp_bits, man_bits, block) of the weights' format.

    bits_w = fprop.rhs element bits, bits_a = fprop.lhs, bits_g = dgrad.lhs (16 when unquantized).
    exp_bits/man_bits: the fprop weight element when it is floating point (bf16: 8, 7), else None;
    block: its scaling block along K for block/tile granularity, else None (per-tensor/per-row).
    """
    recipe = recipes.get(name)
    out = {f"fmt_{role}_{side}": getattr(gemm, side).describe()
           for role, gemm in recipe.roles.items() for side in ("lhs", "rhs")}

    def bits(operand) -> int:
        return UNQUANTIZED_BITS if operand.spec is None else operand.spec.element.bits

    out |= {"bits_w": bits(recipe.fprop.rhs), "bits_a": bits(recipe.fprop.lhs), "bits_g": bits(recipe.dgrad.lhs)}
    spec = recipe.fprop.rhs.spec
    if spec is None:
        out |= {"exp_bits": 8, "man_bits": 7, "block": None}
    elif isinstance(spec.element, FloatFormat):
        block = spec.block if spec.granularity in ("block", "tile") else None
        out |= {"exp_bits": spec.element.exp_bits, "man_bits": spec.element.man_bits, "block": block}
    else:
        out |= {"exp_bits": None, "man_bits": None, "block": None}
    return out


def make_row(sweep_id: str, run: PlannedRun, summary: dict | None, error: str | None = None) -> dict:
    """The row of a finished (summary) or failed (error) run."""
    if (summary is None) == (error is None):
        raise ValueError("make_row needs exactly one of summary (a finished run) and error (a failed run)")
    cfg = run.config
    counts = param_counts(cfg.model)
    if summary is not None:
        if summary["status"] not in FINAL_STATUSES:
            raise ValueError(f"run {run.run_id} has summary status {summary['status']!r}, not one of {FINAL_STATUSES}")
        status = "ok" if summary["status"] == "ok" else "diverged"
        tokens, flops, loss = summary["tokens"], summary["flops"], summary["final_val_loss"]
    else:
        status, tokens, loss = "failed", run.tokens, None
        flops = flops_per_token(cfg.model)["total"] * run.tokens
    row = {"run_id": run.run_id, "recipe": run.recipe, "n_params": counts["non_embedding"],
           "n_params_total": counts["total"], "tokens": tokens, "flops": flops, "final_val_loss": loss,
           "status": status, "sweep_id": sweep_id, "model": run.model, "seed": run.seed, "lr": run.lr,
           "batch_size": run.batch_size, "seq_len": cfg.model.seq_len, "steps": run.steps,
           "planned_tokens": run.tokens, "budget": run.budget, "n_layers": cfg.model.n_layers,
           "d_model": cfg.model.d_model, "n_heads": cfg.model.n_heads, "vocab_size": cfg.model.vocab_size,
           "schedule": cfg.schedule.kind, "warmup_fraction": cfg.schedule.warmup_fraction,
           "warmup_steps": cfg.schedule.warmup_steps, "code_version": code_version(),
           "config_hash": config_hash(cfg), "run_dir": cfg.train.run_dir}
    row |= recipe_columns(run.recipe)
    row |= {k: (summary or {}).get(k) for k in SUMMARY_COLUMNS}
    row["divergence"] = summary["status"] if status == "diverged" else None
    row["error"] = error
    return row
