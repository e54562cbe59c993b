"""Precision rules: keep-lists, per-recipe block defaults, and the recipe check."""
import pytest

from lowprec.train.config import PrecisionConfig
from lowprec.train.precision import check_recipe, keep_blocks, layer_rules


def test_bf16_is_one_rule():
    assert layer_rules(PrecisionConfig(), 12) == [(".*", "bf16")]


def test_nvfp4_default_and_override():
    p = PrecisionConfig(recipe="nvfp4")
    # first 2 + last 8 of 62 blocks at 12B, scaled to the depth and rounded half up
    assert [keep_blocks(p, n) for n in (62, 24, 12, 4, 2)] == [(2, 8), (1, 3), (0, 2), (0, 1), (0, 0)]
    assert keep_blocks(PrecisionConfig(recipe="nvfp4_no_rht"), 62) == (2, 8)
    assert layer_rules(p, 4) == [("^lm_head$", "bf16"), ("^blocks/3/.*$", "bf16"), (".*", "nvfp4")]
    p = PrecisionConfig(recipe="nvfp4", keep_first_blocks=2, keep_last_blocks=8, keep_bf16=())
    assert [r for r, _ in layer_rules(p, 9)][:-1] == [f"^blocks/{i}/.*$" for i in range(9)]
    assert keep_blocks(PrecisionConfig(recipe="mxfp4"), 12) == (0, 0)


def test_unknown_recipe():
    with pytest.raises(ValueError, match="precision.recipe: unknown recipe 'no_such_recipe'; valid names: bf16, .*nvfp4"):
        check_recipe(PrecisionConfig(recipe="no_such_recipe"))
    check_recipe(PrecisionConfig())
    check_recipe(PrecisionConfig(recipe="fp_e3m2_b32_e8m0"))  # generic sweep recipes are accepted


def test_apply_precision_follows_the_rules():
    from flax import nnx

    from lowprec.models import Llama, ModelConfig
    from lowprec.train.precision import apply_precision, describe_precision

    cfg = ModelConfig(vocab_size=64, seq_len=16, n_layers=3, d_model=32, n_heads=4, mlp_multiple_of=8)
    p = PrecisionConfig(recipe="nvfp4", keep_last_blocks=1)
    table = describe_precision(apply_precision(nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0))), p, 3), p)
    recipe_of = {line.split()[0]: line.split()[4] for line in table.splitlines()[1:-1]}
    assert recipe_of["blocks/0/attn/q_proj"] == recipe_of["blocks/1/mlp/down_proj"] == "nvfp4"
    assert recipe_of["blocks/2/attn/q_proj"] == recipe_of["lm_head"] == "bf16"
    assert describe_precision(None, PrecisionConfig()) is None


def test_fused_projections_are_one_site_each_and_train():
    """With fused projections, qkv_proj and gate_up_proj are quantized sites of their own, and a
    quantized (quartet) model's gradients flow through the split and the gated activation."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import lowprec
    from lowprec.models import Llama, ModelConfig
    from lowprec.train.precision import apply_precision, describe_precision

    cfg = ModelConfig(vocab_size=64, seq_len=32, n_layers=1, d_model=64, n_heads=2, n_kv_heads=1,
                      mlp_multiple_of=64, fused_projections=True)
    p = PrecisionConfig(recipe="quartet", keep_bf16=())
    model = apply_precision(Llama(cfg, rngs=nnx.Rngs(0)), p, 1)
    sites = [line.split()[0] for line in describe_precision(model, p).splitlines()[1:-1]]
    assert "blocks/0/attn/qkv_proj" in sites and "blocks/0/mlp/gate_up_proj" in sites and "blocks/0/attn/q_proj" not in sites
    tokens = jax.random.randint(jax.random.key(0), (2, 32), 0, 64)

    def loss(m):
        with lowprec.quant_key(jax.random.key(1)):
            return jnp.mean(m(tokens).astype(jnp.float32) ** 2)

    grads = nnx.grad(loss)(model)
    for path in ("qkv_proj", "gate_up_proj"):
        g = np.asarray(getattr(grads.blocks[0].attn if path == "qkv_proj" else grads.blocks[0].mlp, path).kernel[...])
        assert np.isfinite(g).all() and np.abs(g).sum() > 0
