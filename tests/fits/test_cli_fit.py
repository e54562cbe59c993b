import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowprec.fits import cli_fit
from lowprec.fits.results import read_fit_json


def _run(argv):
    parser = argparse.ArgumentParser()
    cli_fit.configure_parser(parser)
    return cli_fit.main(parser.parse_args(argv))


def test_fit_end_to_end(synth_rows, chinchilla_truth, tmp_path, capsys):
    recipes = {"bf16": ({}, {"bits_w": 16, "bits_a": 16}), "int4": ({"eff": 0.692}, {"bits_w": 4, "bits_a": 4})}
    rows = synth_rows("quest", chinchilla_truth, recipes)
    rows.append({"run_id": "dead", "recipe": "int4", "n_params": 1e8, "tokens": 1e10, "status": "diverged"})
    runs = tmp_path / "runs.jsonl"
    runs.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    grid = ["--grid", "A=3,8", "--grid", "B=3,8", "--grid", "alpha=0.3", "--grid", "beta=0.3", "--grid", "E=0.5"]
    assert _run([str(runs), "--law", "quest", "--out", str(out), "--bootstrap", "3", "--seed", "1", *grid]) == 0
    printed = capsys.readouterr().out
    assert "50 runs used, 1 excluded" in printed and "run_id=dead recipe=int4: status=diverged" in printed
    assert "eff[int4]" in printed
    for name in ("fit.json", "fit.md", "loss_vs_tokens.png", "loss_vs_compute.png", "residuals.png",
                 "efficiencies.png"):
        assert (out / name).stat().st_size > 0, name
    fs = read_fit_json(out / "fit.json")
    assert fs.config["bootstrap"] == 3 and fs.config["seed"] == 1 and fs.fits["all"].shared.grid_size == 4
    assert fs.fits["all"].efficiency["int4"].params["eff"] == pytest.approx(0.692, rel=0.05)


def test_fit_epoch_format_by_recipe_without_plots(epoch_csv, tmp_path):
    out = tmp_path / "epoch"
    grid = ["--grid", "A=5,10", "--grid", "B=5,10", "--grid", "E=0.5", "--grid", "alpha=0.5", "--grid", "beta=0.5"]
    assert _run([epoch_csv, "--format", "epoch", "--law", "chinchilla", "--by", "recipe", "--bootstrap", "0",
                 "--no-plots", "--out", str(out), *grid]) == 0
    fs = read_fit_json(out / "fit.json")
    assert list(fs.fits) == ["chinchilla"] and len(fs.exclusions) == 5
    assert not list(out.glob("*.png"))


def test_fits_layer_does_not_import_jax():
    """lowprec/__init__.py may import JAX; the fits modules and everything they import must not."""
    package_dir = Path(__file__).resolve().parents[2] / "lowprec"
    code = (f"import sys, types; pkg = types.ModuleType('lowprec'); pkg.__path__ = [{str(package_dir)!r}]; "
            "sys.modules['lowprec'] = pkg; "
            "import lowprec.fits.cli_fit, lowprec.fits.cli_predict, lowprec.fits.cli_runs, lowprec.fits.plots; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
