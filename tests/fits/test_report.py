from lowprec.fits.fitter import FitConfig, fit
from lowprec.fits.report import fit_markdown
from lowprec.fits.table import from_rows


def test_markdown_lists_params_cis_residuals_and_exclusions(synth_rows, chinchilla_truth, small_grid):
    recipes = {"bf16": ({}, {}), "int4": ({"eff": 0.692}, {})}
    rows = synth_rows("quest", chinchilla_truth, recipes)
    rows.append({"run_id": "boom", "recipe": "int4", "n_params": 1e8, "tokens": 1e10, "status": "diverged"})
    fs = fit(from_rows(rows), FitConfig(law="quest", grid=small_grid, bootstrap=4))
    text = fit_markdown(fs, "runs.jsonl")
    lf = fs.fits["all"]
    lo, hi = lf.shared.ci["alpha"]
    assert f"| alpha | {lf.shared.params['alpha']:.6g} | ({lo:.6g}, {hi:.6g}) |" in text
    assert "### Base, fitted on the baseline recipe `bf16`, then frozen" in text
    assert f"| int4 | 25 | {lf.efficiency['int4'].objective:.6g} | {lf.efficiency['int4'].params['eff']:.6g}" in text
    assert "| eff | 1 | fixed |" in text
    assert f"| **all** | 50 | {lf.residuals['mean']:.6g} |" in text
    assert "## Exclusions (1)" in text and "| 50 | boom | int4 | status=diverged |" in text
    assert "Huber delta on log-loss residuals: 0.001" in text and "4 resamples" in text
