"""LLaMA-style decoder-only transformer in Flax NNX.

Every weight matmul is a bias-free `nnx.Linear`, so `lowprec.quantize_model` can swap its
dot_general; paths read `blocks/<i>/attn/{q,k,v,o}_proj`, `blocks/<i>/mlp/{gate,up,down}_proj`,
`lm_head` and `embed` (with `fused_projections`: `attn/{qkv,o}_proj`, `mlp/{gate_up,down}_proj`).
Weights are kept in `param_dtype` (f32 master weights) and cast to `compute_dtype` (bf16) for the
matmuls. The attention score and value products are never
quantized: einsums with f32 scores and softmax ("xla"), or cuDNN's fused flash-attention kernel
("cudnn", GPU only; it also keeps the softmax in f32). "auto" picks cudnn on GPU for 16-bit compute.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

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
        q_out, kv_out = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.fused = cfg.fused_projections
        if self.fused:
            self.qkv_sizes = (q_out, kv_out, kv_out)
            self.qkv_proj = _linear(cfg, cfg.d_model, sum(self.qkv_sizes), rngs)
        else:
            self.q_proj = _linear(cfg, cfg.d_model, q_out, rngs)
            self.k_proj = _linear(cfg, cfg.d_model, kv_out, rngs)
            self.v_proj = _linear(cfg, cfg.d_model, kv_out, rngs)
        self.o_proj = _linear(cfg, cfg.n_heads * cfg.head_dim, cfg.d_model, rngs)
        self.q_norm = _norm(cfg, cfg.head_dim, rngs) if cfg.qk_norm else None
        self.k_norm = _norm(cfg, cfg.head_dim, rngs) if cfg.qk_norm else None

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        if self.fused:
            q, k, v = split_last(self.qkv_proj(x), self.qkv_sizes)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(b, t, self.n_heads, self.head_dim)
        k, v = (a.reshape(b, t, self.n_kv, self.head_dim) for a in (k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(q, self.theta), rope(k, self.theta)
        if self.impl == "cudnn":
            out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        else:
            out = causal_attention(q, k, v)
        return self.o_proj(out.reshape(b, t, self.n_heads * self.head_dim))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def split_last(x: jax.Array, sizes: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """x [..., sum(sizes)] split along its last axis (a fused q/k/v projection's output)."""
    return tuple(jnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=-1))


def _split_last_fwd(x, sizes):
    return split_last(x, sizes), None


def _split_last_bwd(sizes, _, grads):
    """The parts' gradients concatenated once (an optimization barrier): XLA otherwise fused the
    concatenation into each of its two consumer GEMMs' inputs, a copy of dY for each."""
    return (lax.optimization_barrier(jnp.concatenate(grads, axis=-1)),)


split_last.defvjp(_split_last_fwd, _split_last_bwd)


@jax.custom_vjp
def gated_silu(h: jax.Array) -> jax.Array:
    """silu(gate) · up of h [..., 2H] = [gate | up] (a fused gate/up projection's output)."""
    gate, up = jnp.split(h, 2, axis=-1)
    return jax.nn.silu(gate) * up


def _gated_silu_fwd(h):
    return gated_silu(h), h


def _gated_silu_bwd(h, g):
    """Autodiff's gate and up gradients, selected into h's layout by one elementwise `where`:
    XLA fuses that into one pass that writes dh, where the transpose of the split (a concatenate)
    was two materialized halves copied once per consumer GEMM (0.48 ms per 1b layer, H100)."""
    h2 = h.reshape(h.shape[:-1] + (2, h.shape[-1] // 2))
    _, vjp = jax.vjp(lambda a, b: jax.nn.silu(a) * b, h2[..., :1, :], h2[..., 1:, :])
    d_gate, d_up = vjp(g[..., None, :])
    is_gate = jax.lax.broadcasted_iota(jnp.int32, h2.shape, h2.ndim - 2) == 0
    return (jnp.where(is_gate, d_gate, d_up).reshape(h.shape),)


gated_silu.defvjp(_gated_silu_fwd, _gated_silu_bwd)


class SwiGLU(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.fused = cfg.fused_projections
        if self.fused:
            self.gate_up_proj = _linear(cfg, cfg.d_model, 2 * cfg.mlp_hidden, rngs)
        else:
            self.gate_proj = _linear(cfg, cfg.d_model, cfg.mlp_hidden, rngs)
            self.up_proj = _linear(cfg, cfg.d_model, cfg.mlp_hidden, rngs)
        self.down_proj = _linear(cfg, cfg.mlp_hidden, cfg.d_model, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.fused:
            return self.down_proj(gated_silu(self.gate_up_proj(x)))
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
