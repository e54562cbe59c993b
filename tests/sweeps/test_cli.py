"""`lowprec sweep`: dry run, exit codes, and the real trainer recording failures without stopping."""
import pytest

from lowprec import cli
from lowprec.sweeps import table

GRID = {"width": [32], "depth": [1], "head_dim": 16, "tokens": [512, 1024]}


def test_dry_run_prints_the_plan(write_sweep, capsys, tmp_path):
    assert cli.main(["sweep", str(write_sweep(grid=GRID)), "--dry-run", "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, shard 1/2: 1" in out and "d32L1-bf16-D1024-s0" in out and "D512" not in out
    assert not (tmp_path / "out").exists()


def test_bad_input_exits_2(write_sweep, capsys):
    path = str(write_sweep(grid=GRID))
    assert cli.main(["sweep", path, "--dry-run", "precision.recipe=mxfp4"]) == 2
    assert "sets precision.recipe, which the sweep sets per run" in capsys.readouterr().err
    assert cli.main(["sweep", path, "--dry-run", "optim.lr"]) == 2
    assert cli.main(["sweep", str(write_sweep(grid=GRID | {"depht": [1]})), "--dry-run"]) == 2
    assert "unknown key grid.depht" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", path, "--shard", "2/2"])


def test_failing_runs_are_recorded_and_exit_1(write_sweep, tmp_path, capsys):
    """The real trainer on a missing corpus: both runs fail fast, the sweep records both and goes on."""
    path = write_sweep(grid=GRID, overrides=[f"data.corpus={tmp_path / 'no-corpus'}"])
    assert cli.main(["sweep", str(path), "--csv"]) == 1
    rows = table.read_table(tmp_path / "out")
    assert [r["status"] for r in rows] == ["failed", "failed"] and all("no-corpus" in r["error"] for r in rows)
    assert (tmp_path / "out" / "runs.csv").is_file() and "failed 2" in capsys.readouterr().out
