"""FP8 delayed scaling: explicit amax state, history updates, equivalence to current scaling on
the first step, and the gradient history delivered as the state's cotangent."""
import dataclasses

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


def _fq(x, spec, amax):
    return np.asarray(lowprec.dequantize(lowprec.quantize(x, spec, amax=jnp.float32(amax))), np.float64)


@pytest.mark.parametrize("name,margin", [("fp8_delayed", 0), ("fp8_delayed", 1), ("fp8_delayed_pow2", 0)])
def test_matches_float64_reference_at_history_scales(name, margin):
    """All three GEMMs use the histories' amaxes (x2^margin), whatever the tensors' own: here an old,
    large x amax, a w history below w's amax (saturating), a g history; float64 products of the
    quantize(amax=) fake-quantized operands."""
    recipe = lowprec.recipes.get(name).replace(delayed=DelayedScaling(history=8, margin=margin))
    hist = lambda *v: jnp.zeros((8,)).at[jnp.arange(len(v)) + 2].set(jnp.array(v))  # noqa: E731
    state = AmaxState(x=hist(1.0, 100.0), w=hist(0.5 * float(jnp.max(jnp.abs(W)))), g=hist(3.0, 2.0))
    y, gx, gw, new = step(recipe, state)
    ref = {k: float(jnp.max(getattr(state, k))) * 2.0**margin for k in ("x", "w", "g")}
    f, d = recipe.fprop, recipe.dgrad
    xq, wq = _fq(X, f.lhs.spec, ref["x"]), _fq(W.T, f.rhs.spec, ref["w"]).T
    gq = _fq(CT, d.lhs.spec, ref["g"])
    for got, want in ((y, xq @ wq), (gx, gq @ wq.T), (gw, xq.T @ gq)):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=2e-6 * np.abs(want).max())
    assert float(new.g[0]) == float(jnp.max(jnp.abs(CT))) and float(new.g[3]) == 3.0


def test_most_recent_empty_entry_is_current_scaling():
    recipe = lowprec.recipes.get("fp8_delayed").replace(delayed=DelayedScaling(amax_compute="most_recent"))
    state = AmaxState(x=jnp.zeros((1024,)).at[5].set(100.0), w=jnp.zeros((1024,)), g=jnp.zeros((1024,)))
    y, _ = delayed_dot_general(X, W, DN, recipe=recipe, state=state)
    np.testing.assert_array_equal(y, lowprec.dot_general(X, W, DN, recipe="fp8_tensorwise"))


def test_each_tensor_amax_is_taken_once():
    """The history's amax and the quantizer's own statistic are one reduction per tensor (x, w, g)
    after XLA's CSE, plus one max per history: 6 scalar reductions, not 9 (on CPU amaxes reduce
    |x|'s bits as s32, histories f32)."""
    recipe = lowprec.recipes.get("fp8_delayed")

    def fwd_bwd(x, w, state, ct):
        y, vjp, new = jax.vjp(lambda *a: delayed_dot_general(*a[:2], DN, recipe=recipe, state=a[2]), x, w, state,
                              has_aux=True)
        return y, vjp(ct), new

    bf16 = [a.astype(jnp.bfloat16) for a in (X, W, CT)]  # a bf16 max would be a reduction of its own
    hlo = jax.jit(fwd_bwd).lower(bf16[0], bf16[1], init_state(recipe), bf16[2]).compile().as_text()
    assert hlo.count("= s32[] reduce(") == 3 and hlo.count("= f32[] reduce(") == 3


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
    g = recipe.dgrad
    sr = dataclasses.replace(g, lhs=dataclasses.replace(g.lhs, spec=dataclasses.replace(g.lhs.spec, rounding="sr")))
    with pytest.raises(ValueError, match="deterministic rounding"):
        recipe.replace(dgrad=sr)
    with pytest.raises(ValueError, match="history must be >= 1"):
        DelayedScaling(history=0)
