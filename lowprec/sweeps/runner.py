"""Run a sweep: every planned run (or one shard of them) in turn, resumable at any point.

A run is *recorded* when its run dir holds row.json (status ok, diverged or failed). On each
invocation: recorded ok/diverged runs are skipped; failed runs are retried (their row is dropped
first); a run whose summary.json is final but has no row yet (killed between the two writes) is
recorded without training; any other run is trained with lowprec.train.train, which resumes from
the run dir's latest checkpoint. An exception in one run records it as failed and the sweep goes
on; KeyboardInterrupt and kills stop the sweep with the table consistent (see table.py).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from lowprec.sweeps import table
from lowprec.sweeps.plan import PlannedRun, config_hash, plan_runs, shard
from lowprec.sweeps.rows import FINAL_STATUSES, make_row
from lowprec.sweeps.spec import Sweep
from lowprec.train.config import Config

SUMMARY = "summary.json"


def _default_train(cfg: Config) -> dict:
    import jax

    from lowprec.train.loop import train

    try:
        return train(cfg)
    finally:
        jax.clear_caches()  # compiled steps of finished runs are never reused: free them


def run_state(run: PlannedRun) -> str:
    """"ok" / "diverged" / "failed" (recorded), "unrecorded" (final summary, no row), "partial" (has
    checkpoints) or "new"."""
    run_dir = Path(run.config.train.run_dir)
    row = table.read_row(run_dir)
    if row is not None:
        return row["status"]
    summary = run_dir / SUMMARY
    if summary.is_file() and json.loads(summary.read_text())["status"] in FINAL_STATUSES:
        return "unrecorded"
    ckpt = run_dir / "ckpt"
    return "partial" if ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir()) else "new"


def check_recorded(runs: list[PlannedRun]) -> None:
    """Raise when a recorded run was trained with a config other than the one planned now."""
    stale = []
    for run in runs:
        row = table.read_row(Path(run.config.train.run_dir))
        if row is not None and row["status"] != "failed" and row["config_hash"] != config_hash(run.config):
            stale.append(run.run_id)
    if stale:
        raise ValueError(f"runs {', '.join(stale)} were recorded with a different config than the sweep now plans "
                         f"(base config or overrides changed); use another sweep `out` directory")


def _record(out: Path, sweep: Sweep, run: PlannedRun, summary: dict | None, error: str | None) -> dict:
    row = make_row(sweep.name, run, summary, error)
    table.append_row(out, Path(run.config.train.run_dir), row)
    return row


def run_sweep(sweep: Sweep, *, overrides: tuple[str, ...] = (), shard_index: int = 0, shard_count: int = 1,
              dry_run: bool = False, csv: bool = False, train_fn: Callable[[Config], dict] | None = None,
              echo: Callable[[str], None] = print) -> list[dict]:
    """Run this shard's unrecorded runs; returns the runs table (every shard's rows).

    train_fn(cfg) -> summary dict defaults to lowprec.train.train (tests pass a cheaper trainer).
    dry_run prints the plan and each run's state, and trains nothing.
    """
    train_fn = train_fn or _default_train
    runs = plan_runs(sweep, overrides)
    check_recorded(runs)
    mine = shard(runs, shard_index, shard_count)
    out = Path(sweep.out)
    states = {r.run_id: run_state(r) for r in mine}
    if dry_run:
        echo(f"sweep {sweep.name} ({sweep.layout}): {len(runs)} runs, shard {shard_index}/{shard_count}: {len(mine)}")
        for r in mine:
            echo(f"  {r.run_id:<44} N {r.n_params:>12,} D {r.tokens:>14,} steps {r.steps:>7} batch {r.batch_size:>4} "
                 f"lr {r.lr:.3g}  [{states[r.run_id]}]")
        return table.read_table(out)
    out.mkdir(parents=True, exist_ok=True)
    table.write_atomic(out / "sweep.json", json.dumps(dataclasses.asdict(sweep), indent=2) + "\n")
    for r in mine:
        if states[r.run_id] == "unrecorded":
            summary = json.loads((Path(r.config.train.run_dir) / SUMMARY).read_text())
            table.write_row(Path(r.config.train.run_dir), make_row(sweep.name, r, summary))
            states[r.run_id] = "ok"
    table.rebuild(out)
    todo = [r for r in mine if states[r.run_id] not in ("ok", "diverged")]
    echo(f"sweep {sweep.name}: {len(runs)} runs; shard {shard_index}/{shard_count} has {len(mine)}, "
         f"{len(mine) - len(todo)} recorded, {len(todo)} to run")
    for k, r in enumerate(todo, start=1):
        run_dir = Path(r.config.train.run_dir)
        if states[r.run_id] == "failed":
            table.forget(out, run_dir)
        echo(f"[{k}/{len(todo)}] {r.run_id}: N {r.n_params:,} D {r.tokens:,} ({r.steps} steps) "
             f"lr {r.lr:.3g} [{states[r.run_id]}]")
        try:
            summary = train_fn(r.config)
        except Exception as e:  # noqa: BLE001 - a failing run is recorded and the sweep goes on
            row = _record(out, sweep, r, None, f"{type(e).__name__}: {e}")
        else:
            if summary["status"] not in FINAL_STATUSES:
                row = _record(out, sweep, r, None, f"run ended with status {summary['status']!r} at step "
                                                   f"{summary.get('steps_done')}/{r.steps}")
            else:
                row = _record(out, sweep, r, summary, None)
        echo(f"[{k}/{len(todo)}] {r.run_id}: {row['status']} | val_loss {row['final_val_loss']}"
             + (f" | {row['error']}" if row["error"] else ""))
    rows = table.rebuild(out)
    if csv:
        table.write_csv(rows, out / table.CSV_TABLE)
    return rows
