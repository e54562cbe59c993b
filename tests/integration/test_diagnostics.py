import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lowprec as lp
from lowprec.integration.diagnostics import tensor_stats

MXFP4 = lp.specs.get("mxfp4")


def test_outlier_block_known_stats():
    # one 100 among 31 ones: E8M0 floor scale 2^(6-2) = 16, so 100 > 6*16 saturates and 1/16 flushes.
    x = jnp.ones(32).at[0].set(100.0)
    s = tensor_stats(x, MXFP4)
    rms = np.sqrt((100.0**2 + 31) / 32)
    np.testing.assert_allclose(float(s["crest"]), 100 / rms, rtol=1e-6)
    assert float(s["saturated"]) == 1 / 32 and float(s["flushed"]) == 31 / 32
    xv = np.asarray(x, np.float64)
    want_kurt = np.mean((xv - xv.mean()) ** 4) / xv.var() ** 2 - 3
    np.testing.assert_allclose(float(s["kurtosis"]), want_kurt, rtol=1e-5)
    err = np.array([96.0 - 100.0] + [-1.0] * 31)
    np.testing.assert_allclose(float(s["sqnr_db"]), 10 * np.log10(np.sum(xv**2) / np.sum(err**2)), rtol=1e-5)


def test_zero_tensor():
    s = tensor_stats(jnp.zeros(64), MXFP4)
    assert {k: float(v) for k, v in s.items()} == {
        "amax": 0.0, "rms": 0.0, "crest": 0.0, "kurtosis": 0.0, "saturated": 0.0, "flushed": 0.0,
        "sqnr_db": float("inf"), "rel_error": 0.0, "mse": 0.0}


def test_int_beats_fp_on_gaussian_fp_beats_int_on_outliers():
    g = jax.random.normal(jax.random.key(0), (4096,))
    int8, fp8 = lp.QuantSpec(element="int8"), lp.QuantSpec(element="e4m3")
    sq = lambda x, spec: float(lp.quant_error(x, spec)["sqnr_db"])
    assert sq(g, int8) > sq(g, fp8) + 5
    outl = g.at[0].set(1e4)
    assert sq(outl, fp8) > sq(outl, int8) + 5


def test_quant_diagnostics_of_a_linear():
    lin = lp.quantize_model(nnx.Linear(16, 16, use_bias=False, rngs=nnx.Rngs(0)), "fp8_rowwise")
    x = jax.random.normal(jax.random.key(1), (16, 16))
    stats = lp.quant_diagnostics(lin, x)
    assert set(stats) == {f"/{role}/{slot}/{stat}" for role in ("fprop", "dgrad", "wgrad") for slot in ("lhs", "rhs")
                          for stat in tensor_stats(x, lp.specs.get("nvfp4"))}
    assert stats["/fprop/rhs/amax"] == pytest.approx(float(jnp.max(jnp.abs(lin.kernel[...]))))
    assert stats["/fprop/lhs/amax"] == pytest.approx(float(jnp.max(jnp.abs(x))))
    assert stats["/dgrad/lhs/amax"] == 1.0 and stats["/dgrad/lhs/crest"] == 1.0  # dY of sum(out) is all ones


def test_quant_diagnostics_needs_a_key_for_sr_recipes():
    lin = lp.quantize_model(nnx.Linear(16, 16, use_bias=False, rngs=nnx.Rngs(0)), "nvfp4")
    with pytest.raises(ValueError, match="quant_key"):
        lp.quant_diagnostics(lin, jnp.ones((16, 16)))
