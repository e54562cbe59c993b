"""Parameter and FLOP counts: formula vs the real NNX tree and vs a hand count."""
import dataclasses
import math

import pytest
from flax import nnx

from lowprec.models import Llama, ModelConfig, flops_per_token, param_counts

TINY = ModelConfig(vocab_size=64, seq_len=16, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, qk_norm=True,
                   mlp_multiple_of=8)


def test_hand_count():
    # d=32, 4 heads of 8, 2 kv heads, SwiGLU hidden 8*ceil(int(85.33)/8) = 88, V=64, L=2
    attn = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32  # q k v o
    mlp = 3 * 32 * 88
    norms = 2 * 32 + 2 * 8  # attn/mlp norms + q/k norms
    assert TINY.mlp_hidden == 88
    assert param_counts(TINY) == {
        "total": 2 * (attn + mlp + norms) + 32 + 2 * 64 * 32,
        "embedding": 64 * 32,
        "lm_head": 64 * 32,
        "non_embedding": 2 * (attn + mlp + norms) + 32,
        "matmul": 2 * (attn + mlp) + 64 * 32,
    }
    assert flops_per_token(TINY) == {"matmul": 150528, "attention": 12 * 2 * 4 * 8 * 16, "total": 162816}


def _tree_counts(cfg):
    state = nnx.state(nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0))), nnx.Param)  # shapes only
    flat = {"/".join(map(str, p)): math.prod(v.get_value().shape) for p, v in nnx.to_flat_state(state)}
    return sum(flat.values()), flat


@pytest.mark.parametrize("tie", [False, True])
def test_counts_match_tree(tie):
    cfg = dataclasses.replace(TINY, **{"tie_embeddings": tie})
    total, flat = _tree_counts(cfg)
    counts = param_counts(cfg)
    assert counts["total"] == total
    assert counts["embedding"] == flat["embed/embedding"]
    assert counts["lm_head"] == flat.get("lm_head/kernel", 0)
    kernels = sum(n for k, n in flat.items() if k.endswith("/kernel"))
    assert counts["matmul"] == kernels + (counts["embedding"] if tie else 0)


def test_quartet_sizes():
    # training.md section 9: 30M / 50M / 100M / 200M name the non-embedding counts
    from lowprec.models import load_model_config

    for name, approx in [("30m", 30e6), ("50m", 50e6), ("100m", 100e6), ("200m", 200e6)]:
        n = param_counts(load_model_config(name))["non_embedding"]
        assert abs(n / approx - 1) < 0.03, (name, n)
