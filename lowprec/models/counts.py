"""Exact parameter and training-FLOP counts of a ModelConfig, by formula.

Definitions (the tests check them against the real NNX parameter tree and a hand count):
- `embedding`: the input embedding table, V·d.
- `lm_head`: the untied output projection, V·d (0 when tied: the table is shared).
- `non_embedding` (N, the scaling-law N of Kaplan and Quartet/QuEST): total minus the input
  embedding and the lm_head, i.e. all block weights plus every RMSNorm scale.
- `matmul`: weights that take part in a matmul per token: all block projections plus the
  output projection V·d (counted even when tied, since the matmul still happens).
"""
from __future__ import annotations

from lowprec.models.config import ModelConfig


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """{total, embedding, lm_head, non_embedding, matmul} parameter counts of `cfg`."""
    d, hd, v = cfg.d_model, cfg.head_dim, cfg.vocab_size
    attn = d * cfg.n_heads * hd * 2 + d * cfg.kv_heads * hd * 2  # q, o + k, v
    mlp = 3 * d * cfg.mlp_hidden
    norms = 2 * d + (2 * hd if cfg.qk_norm else 0)
    block_matmul = cfg.n_layers * (attn + mlp)
    embedding = v * d
    lm_head = 0 if cfg.tie_embeddings else v * d
    non_embedding = block_matmul + cfg.n_layers * norms + d  # + final norm
    return {
        "total": embedding + lm_head + non_embedding,
        "embedding": embedding,
        "lm_head": lm_head,
        "non_embedding": non_embedding,
        "matmul": block_matmul + v * d,
    }


def flops_per_token(cfg: ModelConfig) -> dict[str, int]:
    """Training FLOPs per token (forward + backward): {matmul, attention, total}.

    matmul = 6·N_matmul (lm_head included, per Porian et al.); attention = 12·L·n_heads·d_head·T,
    the PaLM form for the score and value products at sequence length T. The causal half is NOT
    removed (the masked upper triangle is counted, as PaLM and nanoGPT do).
    """
    matmul = 6 * param_counts(cfg)["matmul"]
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * cfg.seq_len
    return {"matmul": matmul, "attention": attention, "total": matmul + attention}
