import contextlib

import jax
import numpy as np
import pytest
from flax import nnx

import lowprec as lp
from lowprec.integration.keys import derive_key


def test_linear_equals_flax_linear_with_recipe_dot_general():
    x = jax.random.normal(jax.random.key(1), (4, 16))
    ours = lp.nnx.Linear(16, 32, recipe="fp8_rowwise", rngs=nnx.Rngs(0))
    ref = nnx.Linear(16, 32, dot_general=lp.recipes.get("fp8_rowwise").dot_general(), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours(x), ref(x))


def test_linear_with_sr_uses_its_stream_id():
    x = jax.random.normal(jax.random.key(1), (16, 16))
    recipe = lp.recipes.get("fp4_all_the_way")
    ours = lp.nnx.Linear(16, 16, recipe=recipe, rngs=nnx.Rngs(0))
    k = jax.random.key(9)
    ref = nnx.Linear(16, 16, dot_general=recipe.dot_general(derive_key(k, ours.quant_id[...], 0)), rngs=nnx.Rngs(0))

    def grads(m, key):
        def loss(m):
            with lp.quant_key(key) if key is not None else contextlib.nullcontext():
                return (m(x) ** 2).sum()
        return nnx.grad(loss)(m).kernel[...]

    np.testing.assert_array_equal(grads(ours, k), grads(ref, None))
    with pytest.raises(ValueError, match="quant_key"):
        ours(x)


def test_einsum_equals_flax_einsum():
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    ours = lp.nnx.Einsum("btd,dnh->btnh", (16, 2, 16), recipe="fp8_rowwise", rngs=nnx.Rngs(0))
    qeinsum = lp.integration.ops.QuantEinsum(
        lp.integration.rules.Site(path="", kind="layer", layer="Einsum", op="einsum", params=0,
                                  recipe=lp.recipes.get("fp8_rowwise")))
    ref = nnx.Einsum("btd,dnh->btnh", (16, 2, 16), einsum_op=qeinsum, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours(x), ref(x))
    with pytest.raises(ValueError, match="einsum_op"):
        lp.nnx.Einsum("btd,dn->btn", (16, 2), recipe="bf16", einsum_op=None, rngs=nnx.Rngs(0))


def test_quantize_model_keeps_their_recipe():
    class M(nnx.Module):
        def __init__(self):
            self.a = lp.nnx.Linear(16, 16, recipe="fp8_rowwise", rngs=nnx.Rngs(0))
            self.b = nnx.Linear(16, 16, rngs=nnx.Rngs(0))

    m = lp.quantize_model(M(), "nvfp4")
    rows = {line.split()[0]: line for line in lp.describe(m).splitlines()[1:-1]}
    assert " own " in rows["a"] and " fp8_rowwise " in rows["a"] and " nvfp4 " in rows["b"]
