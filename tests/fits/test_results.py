import json

import pytest

from lowprec.fits.fitter import FitConfig, fit
from lowprec.fits.laws import QUARTET_NOTEBOOK
from lowprec.fits.results import read_fit_json, write_fit_json
from lowprec.fits.table import from_rows


@pytest.fixture
def quartet_fitset(synth_rows):
    recipes = {"bf16": ({}, {}), "mxfp4": ({"effN": 0.645, "effD": 0.893}, {"bits_w": 4})}
    rows = synth_rows("quartet", QUARTET_NOTEBOOK, recipes, noise=1e-4)
    rows.append({"run_id": "x", "recipe": "mxfp4", "status": "nan", "n_params": 1e8, "tokens": 1e10})
    grid = {"A": (11.0,), "B": (12.0,), "alpha": (0.5,), "beta": (0.5,), "gamma": (0.3,), "E": (0.0,)}
    return fit(from_rows(rows), FitConfig(law="quartet", grid=grid, delta=1e-4, bootstrap=3))


def test_json_round_trip(quartet_fitset, tmp_path):
    path = tmp_path / "fit.json"
    write_fit_json(quartet_fitset, path)
    back = read_fit_json(path)
    assert back == quartet_fitset
    d = json.loads(path.read_text())
    assert d["fits"]["all"]["base"]["params"] == quartet_fitset.fits["all"].shared.params
    assert set(d["fits"]["all"]["params_flat"]) == {"A", "alpha", "B", "beta", "gamma", "E",
                                                    "effN[mxfp4]", "effD[mxfp4]"}
    assert d["config"]["delta"] == 1e-4 and d["exclusions"][0]["reason"] == "status=nan"
    assert d["recipe_features"]["mxfp4"] == {"bits_w": 4.0}


def test_params_for_and_errors(quartet_fitset, tmp_path):
    lf = quartet_fitset.fits["all"]
    assert lf.params_for("bf16")["effN"] == 1.0
    assert lf.params_for("mxfp4")["effN"] == lf.efficiency["mxfp4"].params["effN"]
    with pytest.raises(ValueError, match="recipe 'int4' not in this fit; fitted recipes: bf16, mxfp4"):
        lf.params_for("int4")
    with pytest.raises(ValueError, match="recipe 'int4' not fitted"):
        quartet_fitset.fit_for("int4")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a lowprec fit.json"):
        read_fit_json(bad)
