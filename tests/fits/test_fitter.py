import numpy as np
import pytest

from lowprec.fits.fitter import FitConfig, _Objective, best_of_starts, fit, huber
from lowprec.fits.laws import EPOCH_CHINCHILLA_BEST, QUARTET_NOTEBOOK, get_law
from lowprec.fits.table import from_rows, load_chinchilla_epoch_csv

KUMAR = {"A": 4299.0, "alpha": 0.4965, "B": 18060.0, "beta": 0.5, "E": 2.7648,
         "gamma_w": 2.6745, "gamma_a": 2.2102, "gamma_kv": 0.9578}
FP = {"n": 300.0, "alpha": 0.35, "d": 600.0, "beta": 0.3, "eps": 1.8, "gamma": 2.0, "delta": 2.0, "nu": 1.5}
EPOCH_CI = {"A": (285, 744), "B": (1042, 5810), "E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


def _assert_recovered(params, truth, rtol):
    for k, v in truth.items():
        assert params[k] == pytest.approx(v, rel=rtol), k


def test_chinchilla_recovered(chinchilla_table, chinchilla_truth, small_grid):
    f = fit(chinchilla_table, FitConfig(law="chinchilla", grid=small_grid)).fits["all"]
    _assert_recovered(f.shared.params, chinchilla_truth, 0.05)
    assert f.residuals["rms"] < 2e-3 and f.shared.grid_size == 32


def test_quest_efficiencies_recovered(synth_rows, chinchilla_truth, small_grid):
    recipes = {"bf16": ({}, {}), "int4": ({"eff": 0.692}, {}), "int2": ({"eff": 0.152}, {})}
    f = fit(from_rows(synth_rows("quest", chinchilla_truth, recipes)), FitConfig(law="quest", grid=small_grid))
    lf = f.fits["all"]
    _assert_recovered(lf.shared.params, chinchilla_truth, 0.05)
    assert lf.flat_params()["eff[int4]"] == pytest.approx(0.692, rel=0.02)
    assert lf.flat_params()["eff[int2]"] == pytest.approx(0.152, rel=0.02)
    assert lf.params_for("bf16")["eff"] == 1.0 and lf.staged


def test_quartet_staged_fit_recovers_base_and_efficiencies(synth_rows):
    recipes = {"bf16": ({}, {}), "mxfp4": ({"effN": 0.645, "effD": 0.893}, {})}
    rows = synth_rows("quartet", QUARTET_NOTEBOOK, recipes, noise=1e-4)
    grid = {"A": (10.0, 12.0), "B": (12.0,), "alpha": (0.5,), "beta": (0.5,), "gamma": (0.3,), "E": (0.0, 0.5)}
    lf = fit(from_rows(rows), FitConfig(law="quartet", grid=grid, delta=1e-4)).fits["all"]
    _assert_recovered(lf.shared.params, QUARTET_NOTEBOOK, 0.05)
    assert lf.shared.fixed == {"effN": 1.0, "effD": 1.0} and lf.shared.n_points == 25
    assert lf.efficiency["mxfp4"].params == pytest.approx({"effN": 0.645, "effD": 0.893}, rel=0.01)
    only_n = fit(from_rows(rows), FitConfig(law="quartet", grid=grid, delta=1e-4, efficiencies=("effN",)))
    stage = only_n.fits["all"].efficiency["mxfp4"]
    assert set(stage.params) == {"effN"} and stage.fixed["effD"] == 1.0


def test_kumar_recovered(synth_rows):
    bits = [(16, 16, 16), (4, 8, 8), (8, 4, 8), (8, 8, 3), (3, 6, 4), (6, 3, 16), (5, 5, 2)]
    recipes = {f"w{w}a{a}kv{k}": ({}, {"bits_w": w, "bits_a": a, "bits_kv": k}) for w, a, k in bits}
    rows = synth_rows("kumar", KUMAR, recipes, noise=1e-4, ns=(3e7, 1e8, 3e8), ratios=(10, 100, 1000))
    grid = {"A": (8.0,), "B": (10.0,), "E": (1.0,), "alpha": (0.3, 0.6), "beta": (0.3, 0.6)}
    lf = fit(from_rows(rows), FitConfig(law="kumar", grid=grid)).fits["all"]
    _assert_recovered(lf.shared.params, KUMAR, 0.05)


def test_fp_emb_recovered(synth_rows):
    fmts = [(4, 3, 32), (2, 1, 32), (5, 2, 128), (3, 2, 16), (2, 3, 64), (1, 2, 32), (4, 3, 1024)]
    recipes = {f"e{e}m{m}b{b}": ({}, {"exp_bits": e, "man_bits": m, "block": b}) for e, m, b in fmts}
    rows = synth_rows("fp_emb", FP, recipes, noise=1e-4, ns=(3e7, 1e8, 3e8), ratios=(10, 100, 1000))
    grid = {"n": (5.0,), "d": (6.0,), "eps": (0.5,), "alpha": (0.3, 0.6), "beta": (0.3, 0.6), "delta": (1.0,), "nu": (1.0,)}
    lf = fit(from_rows(rows), FitConfig(law="fp_emb", grid=grid)).fits["all"]
    _assert_recovered(lf.shared.params, FP, 0.05)


def test_best_of_starts_returns_the_best_not_the_last():
    def double_well(u):  # global minimum -2 at x = -2, local minimum -1 at x = +2
        x = u[0]
        a, b = np.exp(-((x + 2) ** 2)), np.exp(-((x - 2) ** 2))
        return -2 * a - b, np.array([4 * (x + 2) * a + 2 * (x - 2) * b])

    starts = np.array([[-2.5], [1.5], [2.5], [3.0]])
    res = best_of_starts(double_well, starts, [(-4.0, 4.0)], {})
    assert res.start == 0 and res.x[0] == pytest.approx(-2, abs=1e-4) and res.value == pytest.approx(-2)
    assert res.n_starts == 4
    assert best_of_starts(double_well, starts[::-1], [(-3.0, 3.0)], {}).start == 3


def test_shuffled_grid_gives_the_same_fit(epoch_csv, small_grid):
    table = load_chinchilla_epoch_csv(epoch_csv)
    law = get_law("chinchilla")
    x = table.data()
    obj = _Objective(law, law.params, {}, x, x["L"], 1e-3)
    grid = np.array(np.meshgrid(*[small_grid[p.name] for p in law.params], indexing="ij")).reshape(5, -1).T
    a = best_of_starts(obj, grid, obj.bounds(), {})
    perm = np.random.default_rng(3).permutation(len(grid))
    b = best_of_starts(obj, grid[perm], obj.bounds(), {})
    np.testing.assert_allclose(b.x, a.x, rtol=1e-9)
    assert perm[b.start] == a.start


def test_huber_matches_definition():
    r = np.array([-3e-3, -1e-3, 0.0, 5e-4, 2e-3])
    value, psi = huber(r, 1e-3)
    expected = sum(0.5 * v * v if abs(v) <= 1e-3 else 1e-3 * (abs(v) - 5e-4) for v in r)
    assert value == pytest.approx(expected, rel=1e-14)
    np.testing.assert_array_equal(psi, [-1e-3, -1e-3, 0.0, 5e-4, 1e-3])


def test_refusals(synth_rows, chinchilla_truth, small_grid):
    cfg = FitConfig(law="chinchilla", grid=small_grid)
    rows = synth_rows("chinchilla", chinchilla_truth, {"bf16": ({}, {})})
    with pytest.raises(ValueError, match="5 runs cannot identify 5 parameters; need at least 6"):
        fit(from_rows(rows[:5]), cfg)
    with pytest.raises(ValueError, match="column 'N' has 1 distinct value"):
        fit(from_rows([r | {"n_params": 1e8} for r in rows]), cfg)
    with pytest.raises(ValueError, match="column 'D' has 1 distinct value"):
        fit(from_rows([r | {"tokens": 1e10} for r in rows]), cfg)
    with pytest.raises(ValueError, match="baseline recipe 'bf16', which is not in the runs table"):
        fit(from_rows([r | {"recipe": "int4"} for r in rows]), FitConfig(law="quest"))
    with pytest.raises(ValueError, match="law fp_emb needs column 'exp_bits'"):
        fit(from_rows(rows), FitConfig(law="fp_emb"))
    kumar_rows = [r | {"bits_w": 4, "bits_a": 8} for r in rows]
    with pytest.raises(ValueError, match="column 'bits_w' has 1 distinct value"):
        fit(from_rows(kumar_rows), FitConfig(law="kumar"))
    with pytest.raises(ValueError, match="grid names \\['a'\\] are not parameters of chinchilla"):
        fit(from_rows(rows), FitConfig(law="chinchilla", grid={"a": (1.0,)}))


@pytest.mark.parametrize("kwargs, match", [
    ({"law": "nope"}, "law 'nope' unknown"), ({"law": "chinchilla", "delta": 0}, "delta must be > 0"),
    ({"law": "chinchilla", "bootstrap": -1}, "bootstrap must be >= 0"),
    ({"law": "chinchilla", "ci_level": 1.0}, "ci_level must be in"),
    ({"law": "chinchilla", "by": "size"}, "by must be None or 'recipe'"),
    ({"law": "quartet", "by": "recipe"}, "fits them in stages"),
    ({"law": "quartet", "efficiencies": ("eff",)}, "choose from effN, effD"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FitConfig(**kwargs)


def test_bootstrap_is_seeded_and_brackets_the_fit(chinchilla_table, small_grid):
    cfg = FitConfig(law="chinchilla", grid=small_grid, bootstrap=12, seed=7)
    a, b = fit(chinchilla_table, cfg).fits["all"], fit(chinchilla_table, cfg).fits["all"]
    assert a.shared.ci == b.shared.ci and a.shared.n_bootstrap == 12
    other = fit(chinchilla_table, FitConfig(law="chinchilla", grid=small_grid, bootstrap=12, seed=8)).fits["all"]
    assert other.shared.ci != a.shared.ci
    for k, (lo, hi) in a.shared.ci.items():
        assert lo < hi and lo <= a.shared.params[k] * 1.02 and hi >= a.shared.params[k] * 0.98


def test_by_recipe_fits_each_recipe(synth_rows, chinchilla_truth, small_grid):
    other = chinchilla_truth | {"E": 1.9}
    rows = synth_rows("chinchilla", chinchilla_truth, {"bf16": ({}, {})}) + \
        synth_rows("chinchilla", other, {"fp8": ({}, {})}, seed=1)
    fs = fit(from_rows(rows), FitConfig(law="chinchilla", grid=small_grid, by="recipe"))
    assert set(fs.fits) == {"bf16", "fp8"}
    assert fs.fit_for("fp8").shared.params["E"] == pytest.approx(1.9, rel=0.02)
    assert fs.fit_for("bf16").shared.params["E"] == pytest.approx(1.69, rel=0.02)


def test_epoch_csv_fit_from_a_small_grid(epoch_csv):
    """Epoch's best start region (a, b, e, alpha, beta) = (5..10, 5..10, 0.5, 0.5, 0.5): same optimum."""
    grid = {"A": (5.0, 10.0), "B": (5.0, 10.0), "E": (0.5,), "alpha": (0.5,), "beta": (0.5,)}
    f = fit(load_chinchilla_epoch_csv(epoch_csv), FitConfig(law="chinchilla", grid=grid)).fits["all"]
    _assert_recovered(f.shared.params, EPOCH_CHINCHILLA_BEST, 0.002)


@pytest.mark.slow
def test_epoch_csv_full_grid_within_published_cis(epoch_csv):
    fs = fit(load_chinchilla_epoch_csv(epoch_csv), FitConfig(law="chinchilla", delta=1e-3))
    f = fs.fits["all"]
    assert f.shared.grid_size == 4500 and f.shared.n_points == 240 and len(fs.exclusions) == 5
    for k, (lo, hi) in EPOCH_CI.items():
        assert lo < f.shared.params[k] < hi, k
    _assert_recovered(f.shared.params, {k: EPOCH_CHINCHILLA_BEST[k] for k in ("E", "alpha", "beta")}, 0.01)
    _assert_recovered(f.shared.params, {k: EPOCH_CHINCHILLA_BEST[k] for k in ("A", "B")}, 0.02)


@pytest.mark.slow
def test_bootstrap_ci_coverage_in_simulation(synth_rows, chinchilla_truth, small_grid):
    """20 synthetic datasets x 30 resamples: the 90% percentile CIs cover the truth at roughly 90%."""
    covered, total = 0, 0
    for seed in range(20):
        rows = synth_rows("chinchilla", chinchilla_truth, {"bf16": ({}, {})}, noise=0.01, seed=100 + seed)
        lf = fit(from_rows(rows), FitConfig(law="chinchilla", grid=small_grid, bootstrap=30, seed=seed,
                                            ci_level=0.9)).fits["all"]
        for k, (lo, hi) in lf.shared.ci.items():
            covered += lo <= chinchilla_truth[k] <= hi
            total += 1
    assert 0.7 <= covered / total <= 1.0
