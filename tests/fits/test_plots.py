from lowprec.fits.fitter import FitConfig, fit
from lowprec.fits.plots import write_plots
from lowprec.fits.table import from_rows


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_for_a_staged_law(synth_rows, chinchilla_truth, small_grid, tmp_path):
    recipes = {"bf16": ({}, {}), "int4": ({"eff": 0.692}, {})}
    table = from_rows(synth_rows("quest", chinchilla_truth, recipes))
    paths = write_plots(fit(table, FitConfig(law="quest", grid=small_grid, bootstrap=3)), table, tmp_path)
    assert [p.name for p in paths] == ["loss_vs_tokens.png", "loss_vs_compute.png", "residuals.png",
                                       "efficiencies.png"]
    assert all(_is_png(p) for p in paths)


def test_plots_for_chinchilla_by_recipe(synth_rows, chinchilla_truth, small_grid, tmp_path):
    rows = synth_rows("chinchilla", chinchilla_truth, {"a": ({}, {}), "b": ({}, {})})
    table = from_rows(rows)
    paths = write_plots(fit(table, FitConfig(law="chinchilla", grid=small_grid, by="recipe")), table, tmp_path)
    assert len(paths) == 3 and all(_is_png(p) for p in paths)
