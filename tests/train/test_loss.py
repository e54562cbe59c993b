"""The loss and its one-pass gradient: values against float64 numpy, gradients against autodiff of
the plain f32 formula (the same arithmetic)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lowprec.train.loss import cross_entropy


def reference(logits, targets, z_loss):
    """The plain formula for autodiff: upcast, logsumexp as max (held constant) + log(sum exp), gather."""
    x = logits.astype(jnp.float32)
    m = jax.lax.stop_gradient(jnp.max(x, axis=-1))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    lse = m + jnp.log(jnp.sum(jnp.exp(x - m[..., None]), axis=-1))
    ce = jnp.mean(lse - jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0])
    return ce + z_loss * jnp.mean(lse**2), ce


def test_cross_entropy_and_z_loss():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5)).astype(jnp.bfloat16)
    targets = jnp.array([[0, 1, 4], [2, 2, 3]])
    x = np.asarray(logits, np.float64)
    lse = np.log(np.exp(x).sum(-1))
    ce = np.mean(lse - np.take_along_axis(x, np.asarray(targets)[..., None], -1)[..., 0])
    obj, got = cross_entropy(logits, targets, z_loss=1e-2)
    np.testing.assert_allclose(got, ce, rtol=1e-6)
    np.testing.assert_allclose(obj, ce + 1e-2 * np.mean(lse**2), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_gradient_equals_autodiff_of_the_plain_formula(dtype, z_loss):
    """The same f32 arithmetic as autodiff, so most elements have equal bits (on CPU all but a target
    or two; on an H100 ~58% of f32 ones, all bf16 ones). The rest differ by an f32 ulp or two: XLA may
    contract the fused target term into an FMA, and on GPUs its f32 division (g / s) is not correctly
    rounded and may differ between the two programs' fusions."""
    k1, k2 = jax.random.split(jax.random.key(1))
    logits = (4 * jax.random.normal(k1, (3, 16, 257))).astype(dtype)
    targets = jax.random.randint(k2, (3, 16), 0, 257)
    targets = targets.at[0, :4].set(jnp.array([0, 256, 0, 256]))  # both ends of the vocabulary
    at_target = np.arange(257) == np.asarray(targets)[..., None]
    ulps = 2.0**-7 if dtype == jnp.bfloat16 else 2.0**-21  # one bf16 ulp; four f32 ulps
    for i, which in enumerate(["objective", "ce"]):
        got = jax.jit(jax.grad(lambda x: cross_entropy(x, targets, z_loss)[i]))(logits)
        want = jax.jit(jax.grad(lambda x: reference(x, targets, z_loss)[i]))(logits)
        assert got.dtype == dtype, which
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        np.testing.assert_allclose(got, want, rtol=ulps, atol=0, err_msg=which)
        assert np.mean(got == want) > (0.99 if dtype == jnp.bfloat16 else 0.5), which
        assert np.all(got[at_target] < 0) and np.all(got[~at_target] >= 0), which  # pulls the target up


@pytest.mark.gpu
def test_gpu_gradient_writes_no_vocabulary_sized_f32_array():
    """The point of the custom VJP, on the GPU's fusions: autodiff writes the gradient of bf16 logits
    as a [B, T, V] f32 array; the custom VJP writes none (XLA:CPU fuses differently, hence GPU only)."""
    logits = jnp.zeros((2, 8, 1000), jnp.bfloat16)
    targets = jnp.zeros((2, 8), jnp.int32)

    def buffers(loss):
        hlo = jax.jit(jax.grad(lambda x: loss(x, targets, 0.0)[0])).lower(logits).compile().as_text()
        outputs = [line.split(" fusion(")[0].split("=", 1)[1] for line in hlo.splitlines()
                   if line.startswith("  %") and " fusion(" in line]
        return [o for o in outputs if "f32[2,8,1000]" in o or "f32[16,1000]" in o]

    assert buffers(reference)  # the check sees autodiff's buffer
    assert not buffers(cross_entropy)
