"""LLaMA-style decoder-only transformer in Flax NNX.

Every weight matmul is a bias-free `nnx.Linear`, so `lowprec.quantize_model` can swap its
dot_general; paths read `blocks/<i>/attn/{q,k,v,o}_proj`, `blocks/<i>/mlp/{gate,up,down}_proj`,
`lm_head` and `embed`. Weights are kept in `param_dtype` (f32 master weights) and cast to
`compute_dtype` (bf16) for the matmuls. The attention score and value products are never
quantized: einsums with f32 scores and softmax ("xla"), or cuDNN's fused flash-attention kernel
("cudnn", GPU only; it also keeps the softmax in f32). "auto" picks cudnn on GPU for 16-bit compute.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lowprec.models.config import ModelConfig


def _linear(cfg: ModelConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in, d_out, use_bias=False, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype,
        kernel_init=nnx.initializers.normal(cfg.init_std), rngs=rngs,
    )


def _norm(cfg: ModelConfig, dim: int, rngs: nnx.Rngs) -> nnx.RMSNorm:
    return nnx.RMSNorm(dim, epsilon=cfg.norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype, rngs=rngs)


def rope(x: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding on x[B, T, heads, head_dim], half-split (GPT-NeoX/HF) layout.

    The rotation is computed in f32 for positions 0..T-1 and cast back to x's dtype.
    """
    t, d = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # [T, d/2]
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q·kᵀ/√d + causal mask)·v with q[B,T,H,D], k/v[B,T,K,D] (H a multiple of K: GQA).

    Scores accumulate in f32 (`preferred_element_type`), the softmax is f32, and the
    probabilities are cast to v's dtype for the value product.
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(d)
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def attention_impl(cfg: ModelConfig) -> str:
    """"xla" or "cudnn": cfg.attention with "auto" resolved for the default backend."""
    if cfg.attention != "auto":
        return cfg.attention
    return "cudnn" if jax.default_backend() == "gpu" and cfg.compute_dtype != "float32" else "xla"


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.n_heads, self.n_kv, self.head_dim, self.theta = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.rope_theta
        self.impl = attention_impl(cfg)
        self.q_proj = _linear(cfg, cfg.d_model, cfg.n_heads * cfg.head_dim, rngs)
        self.k_proj = _linear(cfg, cfg.d_model, cfg.kv_heads * cfg.head_dim, rngs)
        self.v_proj = _linear(cfg, cfg.d_model, cfg.kv_heads * cfg.head_dim, rngs)
        self.o_proj = _linear(cfg, cfg.n_heads * cfg.head_dim, cfg.d_model, rngs)
        self.q_norm = _norm(cfg, cfg.head_dim, rngs) if cfg.qk_norm else None
        self.k_norm = _norm(cfg, cfg.head_dim, rngs) if cfg.qk_norm else None

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.n_kv, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.n_kv, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(q, self.theta), rope(k, self.theta)
        if self.impl == "cudnn":
            out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        else:
            out = causal_attention(q, k, v)
        return self.o_proj(out.reshape(b, t, self.n_heads * self.head_dim))


class SwiGLU(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.gate_proj = _linear(cfg, cfg.d_model, cfg.mlp_hidden, rngs)
        self.up_proj = _linear(cfg, cfg.d_model, cfg.mlp_hidden, rngs)
        self.down_proj = _linear(cfg, cfg.mlp_hidden, cfg.d_model, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn_norm = _norm(cfg, cfg.d_model, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = _norm(cfg, cfg.d_model, rngs)
        self.mlp = SwiGLU(cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nnx.Module):
    """tokens int32[B, T] -> logits[B, T, vocab] in the compute dtype (the loss upcasts to f32)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype,
            embedding_init=nnx.initializers.normal(cfg.init_std), rngs=rngs,
        )
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = _norm(cfg, cfg.d_model, rngs)
        self.lm_head = None if cfg.tie_embeddings else _linear(cfg, cfg.d_model, cfg.vocab_size, rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.ndim != 2 or tokens.shape[1] > self.cfg.seq_len:
            raise ValueError(f"tokens must be int[B, T] with T <= seq_len={self.cfg.seq_len}, got shape {tokens.shape}")
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        x = self.final_norm(x)
        return self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
