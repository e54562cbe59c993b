"""FP8 delayed scaling: explicit amax state, history updates, equivalence to current scaling on
the first step, and the gradient history delivered as the state's cotangent."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowprec
from lowprec.gemm import AmaxState, delayed_dot_general, init_state, next_state
from lowprec.gemm.config import DelayedScaling

DN = (((1,), (0,)), ((), ()))
X = jax.random.normal(jax.random.key(0), (16, 64))
W = jax.random.normal(jax.random.key(1), (64, 32))
CT = jax.random.normal(jax.random.key(2), (16, 32))


def step(recipe, state, x=X, w=W):
    def loss(x, w, st):
        y, new = delayed_dot_general(x, w, DN, recipe=recipe, state=st)
        return jnp.sum(y * CT), (y, new)

    (_, (y, fwd_state)), (gx, gw, gst) = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, w, state)
    return y, gx, gw, next_state(fwd_state, gst)


def test_first_step_equals_current_scaling():
    recipe = lowprec.recipes.get("fp8_delayed")
    y, gx, gw, _ = step(recipe, init_state(recipe))
    current = lowprec.recipes.get("fp8_tensorwise")
    y2, vjp = jax.vjp(lambda a, b: lowprec.dot_general(a, b, DN, recipe=current), X, W)
    gx2, gw2 = vjp(CT)
    for a, b in ((y, y2), (gx, gx2), (gw, gw2)):
        np.testing.assert_array_equal(a, b)


def test_histories_update_newest_first():
    recipe = lowprec.recipes.get("fp8_delayed").replace(delayed=DelayedScaling(history=4))
    state = init_state(recipe)
    _, _, _, state = step(recipe, state)
    _, _, _, state = step(recipe, state, x=2 * X)
    ax = float(jnp.max(jnp.abs(X)))
    np.testing.assert_allclose(np.asarray(state.x), [2 * ax, ax, 0, 0], rtol=1e-6)
    assert float(state.w[0]) == float(state.w[1]) == float(jnp.max(jnp.abs(W))) and float(state.w[2]) == 0
    assert float(state.g[0]) > 0 and float(state.g[1]) > 0 and float(state.g[2]) == 0


def test_scale_comes_from_history():
    recipe = lowprec.recipes.get("fp8_delayed")
    hist = jnp.zeros((1024,)).at[5].set(100.0)  # an old, large amax dominates the max
    state = AmaxState(x=hist, w=jnp.zeros((1024,)), g=jnp.zeros((1024,)))
    y, _ = delayed_dot_general(X, W, DN, recipe=recipe, state=state)
    spec = recipe.fprop.lhs.spec
    xq = lowprec.dequantize(lowprec.quantize(X, spec, amax=jnp.float32(100.0)))
    wq = lowprec.dequantize(lowprec.quantize(W, spec))
    np.testing.assert_allclose(y, xq @ wq, rtol=1e-5, atol=1e-5)
    most_recent = recipe.replace(delayed=DelayedScaling(amax_compute="most_recent"))
    y_recent, _ = delayed_dot_general(X, W, DN, recipe=most_recent, state=state)
    np.testing.assert_allclose(y_recent, lowprec.dot_general(X, W, DN, recipe="fp8_tensorwise"), rtol=1e-6)


def test_state_is_jittable_and_errors():
    recipe = lowprec.recipes.get("fp8_delayed")
    jitted = jax.jit(lambda x, w, s: delayed_dot_general(x, w, DN, recipe=recipe, state=s))
    y, s = jitted(X, W, init_state(recipe))
    assert y.shape == (16, 32) and isinstance(s, AmaxState)
    with pytest.raises(ValueError, match="delayed scaling, which carries amax state"):
        lowprec.dot_general(X, W, DN, recipe=recipe)
    with pytest.raises(ValueError, match="needs a Recipe with delayed scaling"):
        delayed_dot_general(X, W, DN, recipe=lowprec.recipes.get("fp8_tensorwise"), state=init_state(recipe))
    with pytest.raises(ValueError, match="per-tensor specs"):
        lowprec.recipes.get("mxfp8").replace(delayed=DelayedScaling())
    with pytest.raises(ValueError, match="history must be >= 1"):
        DelayedScaling(history=0)
