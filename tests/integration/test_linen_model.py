import jax
import numpy as np
import pytest

import lowprec as lp
from tests.integration.models import LinenModel, inputs, nvfp4_rules


@pytest.fixture(scope="module")
def setup():
    model = LinenModel()
    q = lp.quantize_model(model, [lp.Rule(path="^blocks_0", recipe="bf16"), lp.Rule(path="^blocks_2", recipe="bf16"),
                                  lp.Rule(path=".*", recipe="fp8_rowwise")], sample_inputs=(inputs(),))
    return model, q, q.init(jax.random.key(0), inputs())


def _intermediates(apply, variables):
    _, state = apply(variables, inputs(), capture_intermediates=True, mutable=["intermediates"])
    flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    return {"/".join(k.key for k in path[:-2]): v for path, v in flat}


def test_sites_and_describe(setup):
    _, q, _ = setup
    kinds = {s.path: (s.kind, s.recipe.name if s.recipe else None) for s in q.sites}
    assert kinds["blocks_1/up"] == ("layer", "fp8_rowwise") and kinds["blocks_1/mix"] == ("layer", "fp8_rowwise")
    assert kinds["blocks_1"] == ("raw", "fp8_rowwise") and kinds["blocks_0"] == ("raw", "bf16")
    assert "blocks_1/up" in lp.describe(q)


def test_quantizes_only_intended_layers(setup):
    model, q, variables = setup
    ref = _intermediates(model.apply, variables)
    got = _intermediates(q.apply, variables)
    for path in ("blocks_0/up", "blocks_0/mix", "blocks_0"):
        np.testing.assert_array_equal(got[path], ref[path])
    for path in ("blocks_1/up", "blocks_1/mix", "blocks_1"):
        assert not np.array_equal(got[path], ref[path]), path


def test_gradients_flow(setup):
    _, q, variables = setup

    def loss(params):
        return (q.apply({"params": params}, inputs()) ** 2).mean()

    for path, g in jax.tree_util.tree_flatten_with_path(jax.grad(loss)(variables["params"]))[0]:
        assert np.any(np.asarray(g) != 0), path


def test_linen_needs_sample_inputs():
    with pytest.raises(ValueError, match="sample_inputs"):
        lp.quantize_model(LinenModel(), nvfp4_rules())
