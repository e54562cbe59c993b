"""LLaMA model: shapes, paths, causality, GQA and RoPE against independent numpy references, tying."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowprec.models import Llama, ModelConfig
from lowprec.models.llama import causal_attention, gated_silu, rope

CFG = ModelConfig(vocab_size=64, seq_len=16, n_layers=2, d_model=32, n_heads=4, mlp_multiple_of=8)


@nnx.jit
def forward(model, tokens):  # jitted: one compile instead of one per primitive
    return model(tokens)


def _tokens(key=0, b=2, t=16):
    return jax.random.randint(jax.random.key(key), (b, t), 0, CFG.vocab_size, dtype=jnp.int32)


def test_shapes_dtypes_and_paths():
    model = Llama(CFG, rngs=nnx.Rngs(0))
    logits = forward(model, _tokens())
    assert logits.shape == (2, 16, 64) and logits.dtype == jnp.bfloat16
    linears = sorted("/".join(map(str, p)) for p, n in nnx.iter_graph(model) if isinstance(n, nnx.Linear))
    per_block = ["attn/k_proj", "attn/o_proj", "attn/q_proj", "attn/v_proj", "mlp/down_proj", "mlp/gate_proj", "mlp/up_proj"]
    assert linears == [f"blocks/{i}/{n}" for i in range(2) for n in per_block] + ["lm_head"]
    assert all(not n.use_bias for _, n in nnx.iter_graph(model) if isinstance(n, nnx.Linear))
    params = nnx.state(model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}


def test_rejects_too_long_sequence():
    model = Llama(CFG, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="seq_len=16"):
        model(jnp.zeros((1, 17), jnp.int32))


@pytest.mark.parametrize("n_kv_heads,qk_norm", [(None, False), (2, True)])
def test_causal(n_kv_heads, qk_norm):
    cfg = dataclasses.replace(CFG, **{"n_kv_heads": n_kv_heads, "qk_norm": qk_norm})
    model = Llama(cfg, rngs=nnx.Rngs(1))
    a = _tokens(1)
    b = a.at[:, 10:].set((a[:, 10:] + 7) % cfg.vocab_size)
    la, lb = forward(model, a), forward(model, b)
    np.testing.assert_array_equal(np.asarray(la[:, :10], np.float32), np.asarray(lb[:, :10], np.float32))
    assert not np.array_equal(np.asarray(la[:, 10:], np.float32), np.asarray(lb[:, 10:], np.float32))


def _np_attention(q, k, v):
    """Reference: explicit per-head loops, kv heads shared by groups of n_heads/n_kv query heads."""
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            s = q[bi, :, hi] @ k[bi, :, hi // group].T / np.sqrt(d)
            s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            out[bi, :, hi] = (p / p.sum(-1, keepdims=True)) @ v[bi, :, hi // group]
    return out


@pytest.mark.parametrize("kv", [4, 2, 1])
def test_attention_matches_reference(kv):
    ks = jax.random.split(jax.random.key(2), 3)
    q = jax.random.normal(ks[0], (2, 8, 4, 16))
    k = jax.random.normal(ks[1], (2, 8, kv, 16))
    v = jax.random.normal(ks[2], (2, 8, kv, 16))
    got = np.asarray(jax.jit(causal_attention)(q, k, v))
    np.testing.assert_allclose(got, _np_attention(*map(np.asarray, (q, k, v))), rtol=1e-5, atol=1e-5)


def test_rope_matches_complex_rotation_and_is_relative():
    x = np.asarray(jax.random.normal(jax.random.key(3), (1, 6, 2, 8)))
    got = np.asarray(rope(jnp.asarray(x), 100.0))
    half = x.shape[-1] // 2
    z = x[..., :half] + 1j * x[..., half:]
    freq = 100.0 ** (-np.arange(half) * 2 / x.shape[-1])
    z = z * np.exp(1j * np.arange(6)[None, :, None, None] * freq)
    np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], -1), rtol=1e-5, atol=1e-5)
    # dot products depend only on the position difference
    q = np.broadcast_to(x[:, :1], x.shape)
    r = np.asarray(rope(jnp.asarray(q), 100.0))
    np.testing.assert_allclose(r[0, 1, 0] @ r[0, 3, 0], r[0, 2, 0] @ r[0, 4, 0], rtol=1e-4)


def test_tied_embeddings_use_the_table():
    cfg = dataclasses.replace(CFG, **{"tie_embeddings": True, "compute_dtype": "float32"})
    model = Llama(cfg, rngs=nnx.Rngs(4))
    assert model.lm_head is None
    assert not any("lm_head" in "/".join(map(str, p)) for p, _ in nnx.iter_graph(model))
    tokens = _tokens(4)

    @nnx.jit
    def reference(model, tokens):
        x = model.embed(tokens)
        for block in model.blocks:
            x = block(x)
        return model.final_norm(x) @ model.embed.embedding[...].T

    np.testing.assert_allclose(np.asarray(forward(model, tokens)), np.asarray(reference(model, tokens)),
                               rtol=1e-5, atol=1e-5)


def test_attention_choice():
    from lowprec.models.llama import attention_impl

    assert attention_impl(dataclasses.replace(CFG, attention="xla")) == "xla"
    expected = "cudnn" if jax.default_backend() == "gpu" else "xla"
    assert attention_impl(CFG) == expected
    assert attention_impl(dataclasses.replace(CFG, compute_dtype="float32")) == "xla"
    with pytest.raises(ValueError, match="attention='cudnn' needs compute_dtype bfloat16"):
        dataclasses.replace(CFG, attention="cudnn", compute_dtype="float32")


@pytest.mark.gpu
def test_cudnn_attention_matches_einsum():
    cfg = ModelConfig(vocab_size=128, seq_len=256, n_layers=2, d_model=256, n_heads=4, n_kv_heads=2)
    tokens = jax.random.randint(jax.random.key(5), (2, 256), 0, 128)
    out = {}
    for impl in ("xla", "cudnn"):
        model = Llama(dataclasses.replace(cfg, attention=impl), rngs=nnx.Rngs(0))
        out[impl] = np.asarray(forward(model, tokens), np.float32)
    np.testing.assert_allclose(out["cudnn"], out["xla"], atol=0.05, rtol=0.05)  # bf16 logits of two kernels


def test_fused_projections_compute_the_unfused_model():
    """qkv_proj and gate_up_proj holding the unfused kernels side by side give the same logits; the
    fused layers' paths replace q/k/v and gate/up."""
    cfg = dataclasses.replace(CFG, n_kv_heads=2)
    plain, fused = Llama(cfg, rngs=nnx.Rngs(0)), Llama(dataclasses.replace(cfg, fused_projections=True), rngs=nnx.Rngs(0))
    for pb, fb in zip(plain.blocks, fused.blocks):
        a, m = pb.attn, pb.mlp
        fb.attn.qkv_proj.kernel[...] = jnp.concatenate([a.q_proj.kernel[...], a.k_proj.kernel[...], a.v_proj.kernel[...]], 1)
        fb.mlp.gate_up_proj.kernel[...] = jnp.concatenate([m.gate_proj.kernel[...], m.up_proj.kernel[...]], 1)
        for name in ("attn_norm", "mlp_norm"):
            getattr(fb, name).scale[...] = getattr(pb, name).scale[...]
        fb.attn.o_proj.kernel[...], fb.mlp.down_proj.kernel[...] = a.o_proj.kernel[...], m.down_proj.kernel[...]
    fused.embed.embedding[...], fused.lm_head.kernel[...] = plain.embed.embedding[...], plain.lm_head.kernel[...]
    fused.final_norm.scale[...] = plain.final_norm.scale[...]
    np.testing.assert_array_equal(np.asarray(forward(fused, _tokens()), np.float32),
                                  np.asarray(forward(plain, _tokens()), np.float32))
    loss = lambda m: jnp.mean(m(_tokens()).astype(jnp.float32) ** 2)  # noqa: E731
    # the last MLP's weight gradient sees the same output gradient; every other differs by bf16
    # roundings upstream (a fused input gradient is one GEMM's output, not a bf16 sum of two or three)
    grad = nnx.jit(nnx.grad(loss))
    gp, gf = grad(plain), grad(fused)
    for i in (0, 1):
        a, m = gp.blocks[i].attn, gp.blocks[i].mlp
        for got, parts, tol in ((gf.blocks[i].attn.qkv_proj, (a.q_proj, a.k_proj, a.v_proj), 2e-2),
                                (gf.blocks[i].mlp.gate_up_proj, (m.gate_proj, m.up_proj), 1e-6 if i else 2e-2)):
            want = np.concatenate([np.asarray(p.kernel[...]) for p in parts], 1)
            np.testing.assert_allclose(np.asarray(got.kernel[...]), want, rtol=0, atol=tol * np.abs(want).max())
    linears = sorted("/".join(map(str, p)) for p, n in nnx.iter_graph(fused) if isinstance(n, nnx.Linear))
    assert linears[:3] == ["blocks/0/attn/o_proj", "blocks/0/attn/qkv_proj", "blocks/0/mlp/down_proj"]
    assert fused.blocks[0].attn.qkv_proj.kernel.shape == (32, 32 + 2 * 16)
    assert fused.blocks[0].mlp.gate_up_proj.kernel.shape == (32, 2 * cfg.mlp_hidden)


def test_gated_silu_gradient_is_autodiffs():
    """The fused gate/up activation's custom backward gives autodiff's bits of silu(gate)·up (bf16)."""
    h = jax.random.normal(jax.random.key(3), (2, 5, 64), jnp.bfloat16) * 3
    g = jax.random.normal(jax.random.key(4), (2, 5, 32), jnp.bfloat16)
    plain = lambda x: jax.nn.silu(x[..., :32]) * x[..., 32:]  # noqa: E731
    got_y, got_vjp = jax.vjp(gated_silu, h)
    want_y, want_vjp = jax.vjp(plain, h)
    np.testing.assert_array_equal(np.asarray(got_y, np.float32), np.asarray(want_y, np.float32))
    np.testing.assert_array_equal(np.asarray(got_vjp(g)[0], np.float32), np.asarray(want_vjp(g)[0], np.float32))
