import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lowprec.integration.einsum import einsum_via_dot_general

CASES = [
    ("btd,df->btf", (2, 3, 4), (4, 5)),
    ("...d,df->...f", (2, 3, 4), (4, 5)),
    ("btnh,nhd->btd", (2, 3, 2, 4), (2, 4, 5)),
    ("bqhd,bkhd->bhqk", (2, 3, 2, 4), (2, 5, 2, 4)),
    ("ij,jk", (3, 4), (4, 5)),
    ("...ij,...jk->...ik", (2, 3, 4), (4, 5)),
    ("j,...jk->...k", (4,), (2, 4, 5)),
    ("btd,dx->bt", (2, 3, 4), (4, 5)),
]


@pytest.mark.parametrize("subscripts,sa,sb", CASES)
def test_matches_jnp_einsum(subscripts, sa, sb):
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(ka, sa), jax.random.normal(kb, sb)
    got = einsum_via_dot_general(jax.lax.dot_general, subscripts, a, b, precision=jax.lax.Precision.HIGHEST)
    want = jnp.einsum(subscripts, a, b, precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_errors():
    a = jnp.ones((3, 3))
    with pytest.raises(ValueError, match="two operands"):
        einsum_via_dot_general(jax.lax.dot_general, "ij,jk,kl->il", a, a)
    with pytest.raises(ValueError, match="distinct indices"):
        einsum_via_dot_general(jax.lax.dot_general, "ii,ij->j", a, a)
    with pytest.raises(ValueError, match="sizes"):
        einsum_via_dot_general(jax.lax.dot_general, "ij,jk->ik", a, jnp.ones((4, 2)))
