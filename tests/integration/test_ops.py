import threading

import jax
import jax.numpy as jnp
import numpy as np

import lowprec as lp
from lowprec.integration.ops import ORIGINALS, QuantDot, QuantEinsum, frame, intercepting
from lowprec.integration.rules import Site

ROW = lp.recipes.get("fp8_rowwise")
SITE = Site(path="p", kind="raw", layer="X", op="raw", params=1, rule=0, recipe=ROW, ops=("dot_general", "einsum"))
DN = (((1,), (0,)), ((), ()))


def _xw():
    kx, kw = jax.random.split(jax.random.key(0))
    return jax.random.normal(kx, (4, 16)), jax.random.normal(kw, (16, 8))


def test_quantdot_and_einsum_match_the_recipe():
    x, w = _xw()
    want = ROW.dot_general()(x, w, DN)
    np.testing.assert_array_equal(QuantDot(SITE)(x, w, DN), want)
    np.testing.assert_array_equal(QuantEinsum(SITE)("ij,jk->ik", x, w), want)


def test_frame_quantizes_raw_calls_and_restores():
    x, w = _xw()
    want = ROW.dot_general()(x, w, DN)
    with frame(SITE):
        got = [jax.lax.dot_general(x, w, DN), jnp.einsum("ij,jk->ik", x, w), jnp.matmul(x, w)]
        with frame(None):  # a child without a site: untouched
            plain = jnp.einsum("ij,jk->ik", x, w)
    for g in got:
        np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(plain, ORIGINALS["einsum"]("ij,jk->ik", x, w))
    assert jax.lax.dot_general is ORIGINALS["dot_general"] and jnp.matmul is ORIGINALS["matmul"]


def test_ops_filter_and_other_threads_see_originals():
    x, w = _xw()
    only_einsum = Site(path="p", kind="raw", layer="X", op="raw", params=1, rule=0, recipe=ROW, ops=("einsum",))
    seen = {}
    with frame(only_einsum):
        np.testing.assert_array_equal(jax.lax.dot_general(x, w, DN), ORIGINALS["dot_general"](x, w, DN))
        thread = threading.Thread(target=lambda: seen.update(y=jnp.einsum("ij,jk->ik", x, w)))
        thread.start()
        thread.join()
    np.testing.assert_array_equal(seen["y"], ORIGINALS["einsum"]("ij,jk->ik", x, w))


def test_intercepting_is_reference_counted():
    with intercepting():
        with intercepting():
            pass
        assert jnp.einsum is not ORIGINALS["einsum"]
    assert jnp.einsum is ORIGINALS["einsum"]
