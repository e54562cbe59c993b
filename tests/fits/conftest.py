"""Synthetic runs tables drawn from known law parameters (noise from an explicit numpy seed)."""
from __future__ import annotations

import numpy as np
import pytest

from lowprec.fits.laws import get_law
from lowprec.fits.table import from_rows

EPOCH_CSV = "/work/shared/data/chinchilla_epoch_points.csv"
CHINCHILLA_TRUTH = {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28}
SMALL_CHINCHILLA_GRID = {"A": (3.0, 8.0), "B": (3.0, 8.0), "alpha": (0.2, 0.6), "beta": (0.2, 0.6), "E": (0.0, 1.0)}


def synth_rows(law_name, truth, recipes, *, noise=1e-3, seed=0, ns=(1e7, 3e7, 1e8, 3e8, 1e9),
               ratios=(10, 30, 100, 300, 1000), law_options=None):
    """One run per (recipe, N, D/N); `recipes` maps name -> (efficiencies, feature columns)."""
    law = get_law(law_name, **(law_options or {}))
    rng = np.random.default_rng(seed)
    rows = []
    for recipe, (eff, feats) in recipes.items():
        for n in ns:
            for r in ratios:
                x = {"N": np.array([n]), "D": np.array([n * r])} | {k: np.array([float(v)]) for k, v in feats.items()}
                loss = law.predict(truth | eff, x)[0] * np.exp(rng.normal(0.0, noise))
                rows.append({"run_id": f"{recipe}-{n:.0e}-{r}", "recipe": recipe, "n_params": n,
                             "tokens": n * r, "final_val_loss": float(loss), "status": "ok"} | feats)
    return rows


@pytest.fixture(name="synth_rows")
def _synth_rows_fixture():
    return synth_rows


@pytest.fixture
def epoch_csv():
    return EPOCH_CSV


@pytest.fixture
def chinchilla_truth():
    return dict(CHINCHILLA_TRUTH)


@pytest.fixture
def small_grid():
    return dict(SMALL_CHINCHILLA_GRID)


@pytest.fixture
def chinchilla_table():
    return from_rows(synth_rows("chinchilla", CHINCHILLA_TRUTH, {"bf16": ({}, {})}))
