import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lowprec as lp
from lowprec.gemm import GemmConfig, OperandConfig
from lowprec.integration.keys import derive_key, layer_key, path_id

D = 16
SR = lp.specs.get("nvfp4").replace(rounding="sr")
SR_FWD = lp.Recipe(name="sr_fwd", fprop=GemmConfig(lhs=OperandConfig(spec=SR), rhs=OperandConfig(spec=SR)))


class Twin(nnx.Module):
    def __init__(self):
        self.a = nnx.Linear(D, D, use_bias=False, rngs=nnx.Rngs(0))
        self.b = nnx.Linear(D, D, use_bias=False, rngs=nnx.Rngs(0))  # identical weights

    def __call__(self, x):
        return self.a(x), self.b(x)


@pytest.fixture(scope="module")
def twin():
    return lp.quantize_model(Twin(), [lp.Rule(path=".*", recipe=SR_FWD)])


def _run(model, key):
    x = jax.random.normal(jax.random.key(1), (4, D))
    with lp.quant_key(key):
        return model(x)


def test_same_key_same_draws_layers_and_steps_differ(twin):
    a1, b1 = _run(twin, jax.random.key(5))
    a2, b2 = _run(twin, jax.random.key(5))
    a3, _ = _run(twin, jax.random.key(6))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(a1, b1)  # two layers, same weights and inputs: different SR draws
    assert not np.array_equal(a1, a3)  # two steps


def test_layer_key_is_fold_in_of_path_then_call_index():
    k = jax.random.key(3)
    with lp.quant_key(k):
        first, second = layer_key("blocks/0/up", True, "r"), layer_key("blocks/0/up", True, "r")
    np.testing.assert_array_equal(jax.random.key_data(first), jax.random.key_data(derive_key(k, path_id("blocks/0/up"), 0)))
    np.testing.assert_array_equal(jax.random.key_data(second), jax.random.key_data(derive_key(k, path_id("blocks/0/up"), 1)))
    assert layer_key("x", False, "r") is None


def test_missing_key_and_bad_key():
    with pytest.raises(ValueError, match="needs random draws.*quant_key"):
        layer_key("blocks/0/up", True, "nvfp4")
    with pytest.raises(ValueError, match="quant_key needs one jax.random key"):
        with lp.quant_key(jnp.zeros(3)):
            pass


def test_traced_key_under_jit(twin):
    x = jax.random.normal(jax.random.key(1), (4, D))

    @jax.jit
    def step(key):
        with lp.quant_key(key):
            return twin(x)[0]

    np.testing.assert_array_equal(step(jax.random.key(5)), step(jax.random.key(5)))
    assert not np.array_equal(step(jax.random.key(5)), step(jax.random.key(6)))


def test_shared_amax_is_taken_once_per_array_and_trace():
    from lowprec.integration.keys import shared_amax

    x = jnp.arange(12.0).reshape(3, 4)
    with lp.quant_key(jax.random.key(0)):
        a = shared_amax(x)
        assert shared_amax(x) is a and float(a) == 11.0
        assert shared_amax(x + 0) is not a  # another array
    assert shared_amax(x) is not a  # outside a scope: taken at each call

    def f(x):
        with lp.quant_key(jax.random.key(0)):
            outer = shared_amax(x)
            inner = jax.checkpoint(lambda y: shared_amax(x) * y)(jnp.float32(1))  # another trace: its own
            return outer + inner + shared_amax(x)

    assert float(jax.jit(f)(x)) == 33.0  # no tracer leaks out of the checkpoint's trace


class _ThreeReaders(nnx.Module):
    """q/k/v-like: three projections of one input."""

    def __init__(self):
        self.q, self.k, self.v = (nnx.Linear(D, D, use_bias=False, rngs=nnx.Rngs(i)) for i in range(3))

    def __call__(self, x):
        return self.q(x) * self.k(x) + self.v(x)


def test_layers_sharing_an_input_amax_match_unshared_bit_for_bit(monkeypatch):
    """The shared amax changes no bit of the values or of the gradients (x's and the weights')."""
    model = lp.quantize_model(_ThreeReaders(), [lp.Rule(path=".*", recipe="fp8_tensorwise")])
    graph, params = nnx.split(model)
    x = jax.random.normal(jax.random.key(1), (8, D), jnp.float32) * 3

    def loss(params, x):
        with lp.quant_key(jax.random.key(0)):
            return jnp.sum(jnp.sin(nnx.merge(graph, params)(x)))

    shared = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    monkeypatch.setattr(lp.Recipe, "takes_lhs_amax", property(lambda self: False))
    apart = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(apart)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
