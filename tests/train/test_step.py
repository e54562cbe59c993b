"""The loss function against a numpy reference (the step itself: test_sharding, test_loop)."""
import jax
import jax.numpy as jnp
import numpy as np

from lowprec.train.step import cross_entropy


def test_cross_entropy_and_z_loss():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5)).astype(jnp.bfloat16)
    targets = jnp.array([[0, 1, 4], [2, 2, 3]])
    x = np.asarray(logits, np.float64)
    lse = np.log(np.exp(x).sum(-1))
    ce = np.mean(lse - np.take_along_axis(x, np.asarray(targets)[..., None], -1)[..., 0])
    obj, got = cross_entropy(logits, targets, z_loss=1e-2)
    np.testing.assert_allclose(got, ce, rtol=1e-6)
    np.testing.assert_allclose(obj, ce + 1e-2 * np.mean(lse**2), rtol=1e-6)
