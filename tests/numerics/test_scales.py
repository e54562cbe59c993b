"""Scale rules and scale formats: the RCEIL/FLOOR/CEIL golden example and E8M0 as exponent bits."""
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from lowprec.numerics.formats import get_format
from lowprec.numerics.scales import cast_scale, rule_scale

E4M3 = get_format("e4m3")


@pytest.mark.parametrize("rule,scale,e8m0_byte", [("floor", 2.0**-1, 126), ("ceil", 1.0, 127), ("rceil", 2.0**-1, 126)])
def test_torchao_amax_150_example(rule, scale, e8m0_byte):
    s = float(rule_scale(rule, E4M3, jnp.float32(150.0), None, 1e-12))
    assert s == scale
    assert np.array(s, np.float32).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8) == e8m0_byte


def test_floor_uses_exponent_bits_not_log2():
    # amax just below 8: floor(log2) in fp32 would say 3; the OCP floor scale is 2^(2-2) for E2M1.
    assert float(rule_scale("floor", get_format("e2m1"), jnp.float32(7.9999995), None, 0)) == 1.0
    assert float(rule_scale("floor", get_format("e2m1"), jnp.float32(8.0), None, 0)) == 2.0


def test_even_rule_rounds_mantissa_first():
    # E2M1 has 1 mantissa bit: 7.5 rounds to 8 then floors to 2^3 -> scale 2^(3-2)
    assert float(rule_scale("even", get_format("e2m1"), jnp.float32(7.5), None, 0)) == 2.0
    assert float(rule_scale("floor", get_format("e2m1"), jnp.float32(7.5), None, 0)) == 1.0


def test_zero_amax_gives_finite_scales():
    for rule in ("floor", "ceil", "even", "rceil"):
        assert float(rule_scale(rule, E4M3, jnp.float32(0.0), None, 0)) == 1.0
    assert float(rule_scale("absmax", E4M3, jnp.float32(0.0), None, 1e-12)) == np.float32(1e-12) / np.float32(448)


def test_quest_rules():
    e2m1 = get_format("e2m1")
    s = float(rule_scale("quest_sigma", e2m1, None, jnp.float32(1.0), 0))
    assert s == 2.0 ** np.floor(np.log2(2.92247856 / 6 + 1e-8))
    step = float(rule_scale("quest_rms", get_format("int4_centered"), None, jnp.float32(2.0), 0))
    assert np.isclose(step, 2 * 2.514 * 2.0 / 15)
    with pytest.raises(ValueError, match="quest_rms"):
        rule_scale("quest_rms", e2m1, None, jnp.float32(1.0), 0)


def test_cast_scale_formats():
    assert float(cast_scale(jnp.float32(134.4), "ue4m3")) == 128.0
    assert float(cast_scale(jnp.float32(44.8), "ue4m3")) == 44.0
    assert float(cast_scale(jnp.float32(1000.0), "ue4m3")) == 448.0
    assert float(cast_scale(jnp.float32(1.00390625), "bf16")) == 1.0
    with pytest.raises(ValueError, match="scale_format"):
        cast_scale(jnp.float32(1.0), "e4m3")


def test_ue4m3_scale_cast_matches_generic_unsigned_rounding_exhaustively():
    """cast_scale's UE4M3 takes E4M3's native saturating cast; for every non-negative bf16 pattern
    (and float32 values between them) it equals RNE onto the unsigned format's own grid."""
    from lowprec.numerics.rounding import round_to_format

    bits = np.arange(0, 0x7F81, dtype=np.uint16)  # +0 .. +inf
    s = np.concatenate([bits.view(ml_dtypes.bfloat16).astype(np.float32),
                        np.random.default_rng(0).uniform(0, 500, 100_000).astype(np.float32)])
    got = np.asarray(cast_scale(jnp.asarray(s), "ue4m3"))
    want = np.asarray(round_to_format(jnp.asarray(s), get_format("ue4m3"), "rne"))
    np.testing.assert_array_equal(got[np.isfinite(s)], want[np.isfinite(s)])
