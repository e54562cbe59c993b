import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lowprec as lp
from tests.integration.models import D, Model, RawProj, inputs, nvfp4_rules

NVFP4 = lp.recipes.get("nvfp4")


@pytest.fixture(scope="module")
def pair():
    ref = Model(nnx.Rngs(0))
    q = lp.quantize_model(nnx.clone(ref), nvfp4_rules(), sample_inputs=inputs())
    return ref, q


def test_only_intended_layers_change(pair):
    ref, q = pair
    x = inputs()
    with lp.quant_key(jax.random.key(7)):
        for i in (0, 2):  # kept in bf16: bit-identical
            np.testing.assert_array_equal(q.blocks[i](x), ref.blocks[i](x))
        b, rb = q.blocks[1], ref.blocks[1]
        wide = jnp.concatenate([x, x], axis=-1)
        for name, arg in (("up", x), ("gate", x), ("down", wide), ("mix", x)):
            assert not np.array_equal(getattr(b, name)(arg), getattr(rb, name)(arg)), name
        for name in ("query", "key", "value"):
            assert not np.array_equal(getattr(b.attn, name)(x), getattr(rb.attn, name)(x)), name
        # the raw einsum equals the gemm layer's quantized product
        want = NVFP4.dot_general(jax.random.key(0))(x, rb.mix.w[...], (((2,), (0,)), ((), ())))
        np.testing.assert_array_equal(b.mix(x), want)
    assert b.attn.attention_fn.__class__ is not lp.integration.ops.Framed  # scores left alone
    assert b.attn.attention_fn is rb.attn.attention_fn


def test_describe_lists_recipes(pair):
    text = lp.describe(pair[1])
    rows = {line.split()[0]: line for line in text.splitlines()[1:-1]}
    assert " nvfp4 " in rows["blocks/1/mix"] and " nvfp4 " in rows["blocks/1/attn/out"]
    assert " bf16 " in rows["blocks/0/up"] and " bf16 " in rows["blocks/2/down"]
    assert "blocks/1/attn" not in rows  # attention sites are only listed when quantized
    assert "nvfp4 33.3%" in text.splitlines()[-1]


def test_gradients_reach_every_parameter(pair):
    _, q = pair

    def loss(m, x, key):
        with lp.quant_key(key):
            return jnp.mean(m(x) ** 2)

    grads = nnx.grad(loss)(q, inputs(), jax.random.key(3))
    for path, g in nnx.to_flat_state(grads):
        assert jnp.all(jnp.isfinite(g[...])) and jnp.any(g[...] != 0), path


def test_missing_key_is_a_clear_error(pair):
    with pytest.raises(ValueError, match=r"with lowprec.quant_key\(key\)"):
        pair[1](inputs())


def test_requantizing_is_refused(pair):
    with pytest.raises(ValueError, match="already quantized"):
        lp.quantize_model(pair[1], "fp8_rowwise")


def test_unused_rule_warns_with_paths():
    m = RawProj(nnx.Rngs(0))
    with pytest.warns(UserWarning, match=r"rule 0 \(path='nomatch'.*Quantizable sites: \(root\) \[raw"):
        lp.quantize_model(m, [lp.Rule(path="nomatch", recipe="fp8_rowwise"), lp.Rule(path=".*", recipe="fp8_rowwise")])


class Outer(nnx.Module):
    """A raw site holding another raw site and an unquantized LinearGeneral (dot_general=None)."""

    def __init__(self, rngs):
        self.w = nnx.Param(nnx.initializers.normal(0.3)(rngs.params(), (D, D)))
        self.inner = RawProj(rngs)
        self.lg = nnx.LinearGeneral(D, D, rngs=rngs)

    def __call__(self, x):
        return jnp.einsum("btd,de->bte", x, self.w[...]), self.inner(x), self.lg(x)


def test_nesting_does_not_leak_or_double_quantize():
    ref = Outer(nnx.Rngs(0))
    q = lp.quantize_model(nnx.clone(ref), [lp.Rule(path="inner|lg", recipe="bf16"), lp.Rule(path=".*", recipe="fp8_rowwise")])
    x = inputs()
    own, inner, lg = q(x)
    np.testing.assert_array_equal(inner, ref.inner(x))
    np.testing.assert_array_equal(lg, ref.lg(x))
    want = lp.recipes.get("fp8_rowwise").dot_general()(x, ref.w[...], (((2,), (0,)), ((), ())))
    np.testing.assert_array_equal(own, want)
    assert jax.lax.dot_general is lp.integration.ops.ORIGINALS["dot_general"]  # restored after the call
    assert jnp.einsum is lp.integration.ops.ORIGINALS["einsum"]


def test_explicit_attention_rule_quantizes_scores():
    ref = nnx.MultiHeadAttention(num_heads=2, in_features=D, qkv_features=2 * D, decode=False, rngs=nnx.Rngs(0))
    q = lp.quantize_model(nnx.clone(ref), [lp.Rule(path=".*", recipe="fp8_rowwise", ops=("attention",))])
    assert isinstance(q.attention_fn, lp.integration.ops.Framed)
    x = inputs()
    np.testing.assert_array_equal(q.query(x), ref.query(x))  # projections untouched
    assert not np.array_equal(q(x), ref(x))
