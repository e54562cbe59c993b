"""Delayed scaling through quantize_model (NNX): histories as layer variables, updated by the forward
pass (x, w) and through their gradient (g); the first step equals current scaling."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lowprec as lp
from lowprec.gemm.config import DelayedScaling
from lowprec.integration import AmaxHistory, GradAmaxHistory
from tests.integration.models import LinenModel, Model

DELAYED = lp.recipes.get("fp8_delayed").replace(delayed=DelayedScaling(history=4))
X = jax.random.normal(jax.random.key(1), (2, 4, 16))
CT = jax.random.normal(jax.random.key(2), (2, 4, 8))


class Net(nnx.Module):
    def __init__(self, rngs):
        self.up = nnx.Linear(16, 32, use_bias=False, rngs=rngs)
        self.down = nnx.Einsum("btf,fd->btd", (32, 8), rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.relu(self.up(x)))


def quantized(recipe):
    return lp.quantize_model(Net(nnx.Rngs(0)), recipe)


@functools.partial(jax.jit, static_argnums=0)
def _grads(graphdef, params, hist, rest, x):
    def loss(params, hist, rest):
        model = nnx.merge(graphdef, params, hist, rest, copy=True)
        y = model(x)
        return jnp.sum(y * CT), (y, nnx.state(model, AmaxHistory))

    (_, (y, fwd)), (gp, gh) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, hist, rest)
    return y, gp, fwd, gh


def step(model, x=X):
    """Output and Param gradients of sum(model(x)·CT); the model takes its next histories (not its params)."""
    graphdef, params, hist, rest = nnx.split(model, nnx.Param, GradAmaxHistory, ...)
    y, gp, fwd, gh = _grads(graphdef, params, hist, rest, x)
    nnx.update(model, fwd, gh)
    return y, gp


def test_first_step_equals_tensorwise():
    """Empty histories fall back to current scaling. Bitwise equality of the gemm paths is tested
    eagerly in tests/gemm; under jit XLA fuses their f32 scale products differently (<= 1 ulp)."""
    y, g = step(quantized(DELAYED))
    y2, g2 = step(quantized("fp8_tensorwise"))
    np.testing.assert_array_equal(y, y2)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2), strict=True):
        np.testing.assert_array_max_ulp(a, b, maxulp=1)


def test_histories_update_newest_first():
    model = quantized(DELAYED)
    w_up = float(jnp.max(jnp.abs(model.up.kernel[...])))
    step(model)
    step(model, 2 * X)
    ax = float(jnp.max(jnp.abs(X)))
    np.testing.assert_allclose(model.up.dot_general.amax_x[...], [2 * ax, ax, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(model.up.dot_general.amax_w[...], [w_up, w_up, 0, 0])
    ct = float(jnp.max(jnp.abs(CT)))  # the last layer's output gradient is CT itself
    np.testing.assert_array_equal(model.down.einsum_op.amax_g[...], [ct, ct, 0, 0])
    g_up = np.asarray(model.up.dot_general.amax_g[...])  # relu(2u)' = relu(u)': the same gradient twice
    assert g_up[0] == g_up[1] > 0 and not g_up[2:].any()


def test_scale_comes_from_the_layer_history():
    model = quantized(DELAYED)
    model.up.dot_general.amax_x[...] = jnp.array([100.0, 0, 0, 0])  # an old, large amax sets the scale
    spec = DELAYED.fprop.lhs.spec
    x2 = X.reshape(-1, 16)
    xq = lp.dequantize(lp.quantize(x2, spec, amax=jnp.float32(100.0)))
    wq = lp.dequantize(lp.quantize(model.up.kernel[...].T, spec)).T
    np.testing.assert_allclose(model.up(X).reshape(-1, 32), xq @ wq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.up.dot_general.amax_x[...][:2], [float(jnp.max(jnp.abs(X))), 100.0])


def test_histories_are_not_params():
    model = quantized(DELAYED)
    assert not any("amax" in "/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    kinds = {p[-1]: type(v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param)))}
    assert kinds == {"amax_x": AmaxHistory, "amax_w": AmaxHistory, "amax_g": GradAmaxHistory}
    assert "fp8_delayed" in lp.describe(model)


def test_errors():
    with pytest.raises(ValueError, match=r"Linear / LinearGeneral / Einsum layers only.*blocks/0/mix \[raw\]"):
        lp.quantize_model(Model(nnx.Rngs(0)), DELAYED)
    shared = quantized(DELAYED)
    with lp.quant_key(jax.random.key(0)), pytest.raises(ValueError, match="'up' ran its delayed-scaling GEMM twice"):
        shared.up(X), shared.up(X)
    with pytest.raises(NotImplementedError, match="flax.nnx models only"):
        lp.quantize_model(LinenModel(), [lp.Rule(path="up", recipe=DELAYED)], sample_inputs=(jnp.ones((2, 8, 16)),))


def test_diagnostics_run_and_leave_the_histories():
    model = quantized(DELAYED)
    stats = lp.quant_diagnostics(model, X)
    assert stats["up/fprop/lhs/amax"] == pytest.approx(float(jnp.max(jnp.abs(X))))
    assert not model.up.dot_general.amax_x[...].any()
