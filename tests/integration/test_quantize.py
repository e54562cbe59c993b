import pytest
from flax import nnx

import lowprec as lp
from tests.integration.models import RawProj, inputs


def test_rejects_non_modules():
    with pytest.raises(ValueError, match="flax.nnx.Module or a flax.linen.Module"):
        lp.quantize_model(object(), "nvfp4")


def test_string_rule_quantizes_everything_and_sample_inputs_check_shapes():
    m = lp.quantize_model(RawProj(nnx.Rngs(0)), "nvfp4", sample_inputs=inputs())
    assert "nvfp4 100.0%" in lp.describe(m)
    with pytest.raises(ValueError, match="block size 32 does not divide"):
        lp.quantize_model(RawProj(nnx.Rngs(0)), "mxfp4", sample_inputs=inputs())


def test_custom_dot_general_is_not_silently_replaced():
    lin = nnx.Linear(16, 16, dot_general=lambda *a, **k: 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="custom dot_general"):
        lp.quantize_model(lin, "nvfp4")
