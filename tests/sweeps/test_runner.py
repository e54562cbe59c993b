"""The runner: complete, interrupted and resumed sweeps keep one row per run; failures are recorded;
the table fits end to end. Fast tests use LawTrainer (conftest); the slow test trains for real."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lowprec import cli
from lowprec.fits.results import read_fit_json
from lowprec.sweeps import table
from lowprec.sweeps.plan import plan_runs
from lowprec.sweeps.runner import run_state, run_sweep
from lowprec.sweeps.spec import load_sweep

GRID = {"width": [32, 64], "depth": [1], "head_dim": 16, "tokens": [2048, 4096], "recipe": ["bf16", "mxfp4"]}
FIT_GRID = ["--grid", "A=3,8", "--grid", "B=3,8", "--grid", "alpha=0.2,0.6", "--grid", "beta=0.2,0.6",
            "--grid", "E=0,1"]
QUIET = dict(echo=lambda text: None)


def _ids(rows):
    return [r["run_id"] for r in rows]


def _check_consistent(out, expected_ids):
    rows = table.read_table(out)
    assert sorted(_ids(rows)) == sorted(expected_ids) and len(set(_ids(rows))) == len(rows)
    assert sorted(rows, key=lambda r: r["run_id"]) == table.row_files(out)  # exactly the run dirs' rows


def test_interrupted_sweep_resumes_without_duplicates_or_losses(write_sweep, law_trainer, tmp_path):
    sweep = load_sweep(write_sweep(grid=GRID))
    runs = plan_runs(sweep)
    first = law_trainer(interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, train_fn=first, **QUIET)
    assert first.calls == _ids_of(runs[:3])
    _check_consistent(tmp_path / "out", _ids_of(runs[:3]))
    law_trainer()(runs[3].config)  # killed after summary.json, before its row was written
    assert run_state(runs[3]) == "unrecorded"
    second = law_trainer()
    rows = run_sweep(sweep, train_fn=second, **QUIET)
    assert second.calls == _ids_of(runs[4:])  # neither recorded nor summarized runs train again
    _check_consistent(tmp_path / "out", _ids_of(runs))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    third = law_trainer()
    assert run_sweep(sweep, train_fn=third, **QUIET) == rows and third.calls == []


def _ids_of(runs):
    return [r.run_id for r in runs]


def test_failed_and_diverged_runs_are_recorded_and_failed_ones_retried(write_sweep, law_trainer, tmp_path):
    sweep = load_sweep(write_sweep(grid=GRID))
    trainer = law_trainer(fail=("d32L1-mxfp4-D2048",), diverge=("d64L1-bf16-D4096",))
    rows = {r["run_id"]: r for r in run_sweep(sweep, train_fn=trainer, csv=True, **QUIET)}
    assert len(trainer.calls) == 8 and len(rows) == 8  # the sweep went on after the failure
    failed, diverged = rows["d32L1-mxfp4-D2048-s0"], rows["d64L1-bf16-D4096-s0"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert diverged["status"] == "diverged" and diverged["divergence"] == "nan" and diverged["diverged_at_step"] == 3
    assert (tmp_path / "out" / "runs.csv").read_text().count("\n") == 9
    retry = law_trainer()
    rows = {r["run_id"]: r for r in run_sweep(sweep, train_fn=retry, **QUIET)}
    assert retry.calls == ["d32L1-mxfp4-D2048-s0"] and rows["d32L1-mxfp4-D2048-s0"]["status"] == "ok"
    assert rows["d64L1-bf16-D4096-s0"]["status"] == "diverged"  # diverged runs are final
    _check_consistent(tmp_path / "out", list(rows))


def test_changed_config_of_recorded_runs_raises(write_sweep, law_trainer):
    sweep = load_sweep(write_sweep(grid=GRID))
    run_sweep(sweep, train_fn=law_trainer(), **QUIET)
    with pytest.raises(ValueError, match="recorded with a different config"):
        run_sweep(sweep, overrides=("optim.b2=0.98",), train_fn=law_trainer(), **QUIET)


def test_shards_share_one_table(write_sweep, law_trainer, tmp_path):
    sweep = load_sweep(write_sweep(grid=GRID))
    trainers = [law_trainer() for _ in range(3)]
    for i, trainer in enumerate(trainers):
        run_sweep(sweep, shard_index=i, shard_count=3, train_fn=trainer, **QUIET)
    assert sorted(c for t in trainers for c in t.calls) == sorted(_ids_of(plan_runs(sweep)))
    _check_consistent(tmp_path / "out", _ids_of(plan_runs(sweep)))


def test_dry_run_trains_nothing(write_sweep, law_trainer, tmp_path):
    lines, trainer = [], law_trainer()
    run_sweep(load_sweep(write_sweep(grid=GRID)), dry_run=True, train_fn=trainer, echo=lines.append)
    assert trainer.calls == [] and len(lines) == 9 and lines[1].strip().startswith("d32L1-bf16-D2048-s0")
    assert lines[1].endswith("[new]") and not (tmp_path / "out").exists()


def test_table_fits_end_to_end(write_sweep, law_trainer, tmp_path):
    grid = {"width": [32, 64, 128], "depth": [1, 2], "head_dim": 16, "tokens": [2048, 8192, 32768, 131072],
            "recipe": ["bf16", "mxfp4"]}
    sweep = load_sweep(write_sweep(grid=grid))
    run_sweep(sweep, train_fn=law_trainer(penalty={"mxfp4": 1.05}, diverge=("d32L1-bf16-D2048",)), **QUIET)
    out = tmp_path / "fit"
    rc = cli.main(["fit", str(tmp_path / "out" / "runs.jsonl"), "--law", "chinchilla", "--by", "recipe",
                   "--bootstrap", "0", "--no-plots", "--out", str(out), *FIT_GRID])
    assert rc == 0
    fitset = read_fit_json(out / "fit.json")
    assert [e.run_id for e in fitset.exclusions] == ["d32L1-bf16-D2048-s0"]
    rows = [r for r in table.read_table(tmp_path / "out") if r["status"] == "ok"]
    for recipe in ("bf16", "mxfp4"):
        mine = [r for r in rows if r["recipe"] == recipe]
        x = {"N": np.array([r["n_params"] for r in mine], float), "D": np.array([r["tokens"] for r in mine], float)}
        pred = fitset.law_object().predict(fitset.fit_for(recipe).params_for(recipe), x)
        np.testing.assert_allclose(pred, [r["final_val_loss"] for r in mine], rtol=2e-3)


@pytest.mark.slow
def test_real_sweep_killed_mid_run_resumes_and_fits(write_sweep, corpus, tmp_path):
    """2 sizes x 2 token budgets x 2 recipes of real training in a subprocess, SIGKILLed while a run
    has a checkpoint but no row, then resumed: 8 rows, the killed run continued from its checkpoint."""
    path = write_sweep(grid=GRID | {"recipe": ["bf16", "fp8_tensorwise"]},
                       overrides=[f"data.corpus={corpus}", "train.log_every=1"])
    sweep, out = load_sweep(path), tmp_path / "out"
    runs = plan_runs(sweep)
    env = os.environ | {"XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "lowprec.cli", "sweep", str(path)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = None
    try:
        while proc.poll() is None and partial is None:
            if len(table.read_table(out)) >= 2:
                partial = next((r for r in runs if run_state(r) == "partial"), None)
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert partial is not None, "the sweep ended before it could be killed mid-run"
    rows_before = table.read_table(out)
    assert partial.run_id not in _ids(rows_before) and len(rows_before) < 8
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    _check_consistent(out, _ids_of(runs))
    rows = table.read_table(out)
    assert {r["status"] for r in rows} == {"ok"} and all(r["final_val_loss"] < 4.2 for r in rows)
    run_dir = Path(partial.config.train.run_dir)
    assert "resumed at step" in (run_dir / "log.txt").read_text()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, partial.steps + 1))
    assert cli.main(["fit", str(out / "runs.jsonl"), "--law", "chinchilla", "--bootstrap", "0", "--no-plots",
                     "--out", str(tmp_path / "fit"), *FIT_GRID]) == 0
    assert (tmp_path / "fit" / "fit.json").is_file()
