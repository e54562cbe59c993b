import argparse

from lowprec.fits import cli_predict
from lowprec.fits.fitter import FitConfig, fit
from lowprec.fits.predict import allocate
from lowprec.fits.results import write_fit_json
from lowprec.fits.table import from_rows


def test_predict_prints_allocations_and_best_precision(synth_rows, chinchilla_truth, small_grid, tmp_path, capsys):
    recipes = {"bf16": ({}, {"bits_w": 16, "bits_a": 16, "bits_g": 16}),
               "int8": ({"eff": 0.95}, {"bits_w": 8, "bits_a": 8, "bits_g": 8})}
    fs = fit(from_rows(synth_rows("quest", chinchilla_truth, recipes)), FitConfig(law="quest", grid=small_grid))
    path = tmp_path / "fit.json"
    write_fit_json(fs, path)
    parser = argparse.ArgumentParser()
    cli_predict.configure_parser(parser)
    assert cli_predict.main(parser.parse_args([str(path), "--compute", "1e21"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("law quest, C = 1e+21 FLOPs, cost model linear (power 1, reference 16 bits")
    assert lines[1].split() == ["recipe", "bits", "cost", "x", "N*", "D*", "D*/N*", "loss"]
    int8 = next(a for a in allocate(fs, 1e21) if a.recipe == "int8")
    assert lines[4].split()[:5] == ["int8", "8", "0.5", f"{int8.n_params:.4g}", f"{int8.tokens:.4g}"]
    assert lines[-1] == f"compute-optimal precision: int8 (8 bits), predicted loss {int8.loss:.5g}"
    assert cli_predict.main(parser.parse_args([str(path), "--compute", "1e21", "--cost-model", "flat"])) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("compute-optimal precision: bf16 (16 bits)")
