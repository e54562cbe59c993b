import numpy as np
import pytest

from lowprec.fits.fitter import FitConfig, fit
from lowprec.fits.laws import EPOCH_CHINCHILLA_MLE, get_law
from lowprec.fits.predict import (COST_MODELS, CostModel, allocate, best_precision, chinchilla_optimum,
                                  numeric_optimum)
from lowprec.fits.table import from_rows


def test_epoch_mle_allocation_regression():
    p = EPOCH_CHINCHILLA_MLE
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    assert g == pytest.approx(0.1198, abs=5e-5)
    n, d = chinchilla_optimum(p, 1e21)
    assert n == pytest.approx(2.78e9, rel=5e-3) and d == pytest.approx(5.99e10, rel=5e-3)
    assert d / n == pytest.approx(21.6, abs=0.1)
    n18, d18 = chinchilla_optimum(p, 1e18)
    assert n18 == pytest.approx(8.1e7, rel=1e-2) and d18 / n18 == pytest.approx(25.7, abs=0.1)


def test_numeric_optimum_matches_closed_form():
    n, d = numeric_optimum(get_law("chinchilla"), EPOCH_CHINCHILLA_MLE, {}, 1e21)
    n0, d0 = chinchilla_optimum(EPOCH_CHINCHILLA_MLE, 1e21)
    assert n == pytest.approx(n0, rel=1e-6) and d == pytest.approx(d0, rel=1e-6)


def test_cost_model():
    linear = COST_MODELS["linear"]
    assert linear.bits("fp8", {"bits_w": 8, "bits_a": 8, "bits_g": 16}) == pytest.approx(32 / 3)
    assert linear.multiplier(8.0) == 0.5 and COST_MODELS["flat"].multiplier(8.0) == 1.0
    assert COST_MODELS["flat"].bits("x", {}) is None
    with pytest.raises(ValueError, match="recipe 'x' records none of the bits columns bits_w, bits_a, bits_g"):
        linear.bits("x", {})
    with pytest.raises(ValueError, match="power >= 0"):
        CostModel(power=-1.0)


def _quest_fitset(synth_rows, chinchilla_truth, small_grid):
    recipes = {"bf16": ({}, {"bits_w": 16, "bits_a": 16, "bits_g": 16}),
               "int8": ({"eff": 0.95}, {"bits_w": 8, "bits_a": 8, "bits_g": 8}),
               "int2": ({"eff": 0.152}, {"bits_w": 2, "bits_a": 2, "bits_g": 2})}
    return fit(from_rows(synth_rows("quest", chinchilla_truth, recipes)), FitConfig(law="quest", grid=small_grid))


def test_allocate_per_recipe_and_best_precision(synth_rows, chinchilla_truth, small_grid):
    fs = _quest_fitset(synth_rows, chinchilla_truth, small_grid)
    allocs = {a.recipe: a for a in allocate(fs, 1e21)}
    assert allocs["int8"].cost_multiplier == 0.5 and allocs["int2"].bits == 2.0
    # int8 gets twice the 6ND of bf16: N* D* = 2e21/6
    assert allocs["int8"].n_params * allocs["int8"].tokens == pytest.approx(2e21 / 6, rel=1e-9)
    law = fs.law_object()
    for a in allocs.values():  # loss is the law at the allocation, and the allocation is a minimum
        p = fs.fit_for(a.recipe).params_for(a.recipe)
        c6 = a.n_params * a.tokens
        ns = a.n_params * np.array([0.9, 1.0, 1.1])
        losses = law.predict(p, {"N": ns, "D": c6 / ns})
        assert losses[1] == pytest.approx(a.loss, rel=1e-12) and losses[1] < losses[0] and losses[1] < losses[2]
    assert best_precision(list(allocs.values())).recipe == "int8"
    flat = {a.recipe: a for a in allocate(fs, 1e21, COST_MODELS["flat"])}
    assert best_precision(list(flat.values())).recipe == "bf16"
    with pytest.raises(ValueError, match="compute must be > 0"):
        allocate(fs, 0.0)


def test_allocate_needs_constant_precision_features(synth_rows):
    kumar = {"A": 4299.0, "alpha": 0.4965, "B": 18060.0, "beta": 0.5, "E": 2.7648, "gamma_w": 2.6745, "gamma_a": 2.2102}
    recipes = {f"w{w}a{a}": ({}, {"bits_w": w, "bits_a": a}) for w, a in [(16, 16), (4, 8), (8, 4), (3, 6)]}
    rows = synth_rows("kumar", kumar, recipes, law_options={"kv": False}, ns=(3e7, 1e8, 3e8), ratios=(10, 100, 1000))
    mixed = [r | {"recipe": "int"} for r in rows]
    grid = {"A": (8.0,), "B": (10.0,), "E": (1.0,), "alpha": (0.5,), "beta": (0.5,)}
    fs = fit(from_rows(mixed), FitConfig(law="kumar", grid=grid))
    with pytest.raises(ValueError, match="recipe 'int' has no single value of bits_w, bits_a"):
        allocate(fs, 1e21)
    per_recipe = fit(from_rows(rows), FitConfig(law="kumar", grid=grid))
    allocs = allocate(per_recipe, 1e21)
    assert [a.recipe for a in allocs] == list(recipes)
    assert allocs[1].bits == 6.0
