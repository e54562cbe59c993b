import math

import numpy as np
import pytest

from lowprec.fits.laws import LAWS, QUARTET_NOTEBOOK, FpEmb, get_law

RNG = np.random.default_rng(0)
X = {"N": RNG.uniform(1e7, 1e9, 7), "D": RNG.uniform(1e9, 1e11, 7), "bits_w": RNG.uniform(2, 16, 7),
     "bits_a": RNG.uniform(2, 16, 7), "bits_kv": RNG.uniform(2, 16, 7),
     "ptq_bits": np.array([3, 4, np.nan, 8, 5, 6, np.nan]), "exp_bits": np.array([1., 2, 3, 4, 5, 2, 4]),
     "man_bits": np.array([0., 1, 2, 3, 4, 7, 3]), "block": np.array([1., 16, 32, 128, 32, 16, 2])}
VARIANTS = [get_law(n) for n in LAWS] + [get_law("kumar", kv=True, ptq=True), get_law("kumar", kv=False)]


@pytest.mark.parametrize("law", VARIANTS, ids=lambda law: f"{law.name}{law.options()}")
def test_analytic_gradient_matches_complex_step(law):
    params = law.params + law.efficiencies
    p = {q.name: float(np.exp(RNG.uniform(-1, 1.5))) if q.log else float(RNG.uniform(0.1, 0.6)) for q in params}
    _, grads = law.evaluate(p, X, grad=True)
    for q in params:
        h = 1e-30
        exact = np.imag(law.evaluate(p | {q.name: p[q.name] + 1j * h}, X, grad=False)[0]) / h
        np.testing.assert_allclose(grads[q.name], exact, rtol=1e-8, err_msg=q.name)


def test_registry_and_errors():
    assert set(LAWS) == {"chinchilla", "quartet", "quest", "kumar", "fp_emb", "fp_emb_pow"}
    with pytest.raises(ValueError, match="law 'hoffmann' unknown; choose from chinchilla, quartet"):
        get_law("hoffmann")
    assert get_law("kumar", **get_law("kumar", kv=False, ptq=True).options()).options() == {"kv": False, "ptq": True}


def test_chinchilla_default_grid_is_epochs_4500_points():
    law = get_law("chinchilla")
    starts = {p.name: p.start for p in law.params}
    assert starts["A"] == starts["B"] == (0, 5, 10, 15, 20, 25)
    assert starts["alpha"] == starts["beta"] == (0, 0.5, 1, 1.5, 2)
    assert starts["E"] == (-1, -0.5, 0, 0.5, 1)
    assert math.prod(len(s) for s in starts.values()) == 4500
    assert all(p.log == (p.name in "ABE") for p in law.params)


def test_quartet_notebook_constants_regression():
    law = get_law("quartet")
    x = {"N": np.array([1e8]), "D": np.array([1e10])}
    full = law.predict(QUARTET_NOTEBOOK, x)[0]
    quest_fwd = law.predict(QUARTET_NOTEBOOK | {"effN": 0.645}, x)[0]
    # Hand: (127445/1e8^0.5785 + 465834/1e10^0.5389)^0.2764 + 1.3408, with N -> 0.645 N in the second.
    assert full == pytest.approx(2.8926705590449666, rel=1e-12)
    assert quest_fwd == pytest.approx(2.9640746163184994, rel=1e-12)
    a, al, b, be, g, e = (QUARTET_NOTEBOOK[k] for k in ("A", "alpha", "B", "beta", "gamma", "E"))
    assert quest_fwd == pytest.approx((a / (0.645e8) ** al + b / 1e10**be) ** g + e, rel=1e-12)
    assert quest_fwd > full  # an efficiency below 1 shrinks the effective N and raises the loss


def test_kumar_adapt_and_ptq_rows_without_bits():
    law = get_law("kumar").adapt(("bits_w", "bits_a", "ptq_bits"))
    assert law.options() == {"kv": False, "ptq": True}
    assert law.features == ("bits_w", "bits_a", "ptq_bits")
    p = {"A": 4299.0, "alpha": 0.4965, "B": 18060.0, "beta": 0.5, "E": 2.7648, "gamma_w": 2.6745,
         "gamma_a": 2.2102, "C_T": 0.0598, "gamma_post": 1.0, "gamma_D": 0.5068, "gamma_N": 0.3439}
    base = get_law("kumar", kv=False).predict(p, X)
    with_ptq = law.predict(p, X)
    no_ptq = np.isnan(X["ptq_bits"])
    np.testing.assert_array_equal(with_ptq[no_ptq], base[no_ptq])
    expected = 0.0598 * np.exp(-X["ptq_bits"]) * X["D"] ** 0.5068 / X["N"] ** 0.3439
    np.testing.assert_allclose((with_ptq - base)[~no_ptq], expected[~no_ptq], rtol=1e-12)


def test_fp_emb_critical_data_size_minimizes_the_data_terms():
    law = FpEmb()
    p = {"n": 300.0, "alpha": 0.35, "d": 600.0, "beta": 0.3, "eps": 1.8, "gamma": 2.0, "delta": 2.0, "nu": 1.5}
    n, e, m, b = 1e8, 2.0, 1.0, 32.0
    d_crit = law.critical_data_size(p, n, e, m, b)
    expected = (600.0 * 2.0 * n**0.35 * 2.5**2.0 * 1.5**1.5 / 5.0) ** (1 / 0.6)  # scaling-laws.md section 5
    assert d_crit == pytest.approx(expected, rel=1e-12)
    d = np.geomspace(d_crit / 10, d_crit * 10, 2001)
    x = {"N": np.full_like(d, n), "D": d, "exp_bits": np.full_like(d, e), "man_bits": np.full_like(d, m),
         "block": np.full_like(d, b)}
    assert d[np.argmin(law.predict(p, x))] == pytest.approx(d_crit, rel=3e-3)
