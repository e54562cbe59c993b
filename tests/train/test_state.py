"""Split/merge of the NNX model through flat dicts."""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lowprec.models import Llama, ModelConfig
from lowprec.train.state import other_state, split_model


class Counter(nnx.Variable):
    pass


def test_round_trip_and_non_param_variables():
    cfg = ModelConfig(vocab_size=32, seq_len=8, n_layers=1, d_model=16, n_heads=2, mlp_multiple_of=8)
    model = Llama(cfg, rngs=nnx.Rngs(0))
    model.blocks[0].attn.q_proj.calls = Counter(jnp.zeros((), jnp.int32))
    model_def, params, other = split_model(model)
    assert "blocks/0/attn/q_proj/kernel" in params and "lm_head/kernel" in params
    assert list(other) == ["blocks/0/attn/q_proj/calls"]
    params2 = {k: v * 2 if k == "lm_head/kernel" else v for k, v in params.items()}
    merged = model_def.merge(params2, {"blocks/0/attn/q_proj/calls": jnp.int32(5)})
    assert isinstance(merged.blocks[0].attn.q_proj.calls, Counter)
    np.testing.assert_array_equal(merged.lm_head.kernel[...], params["lm_head/kernel"] * 2)
    same = model_def.merge(params, other)
    assert nnx.graphdef(same) == nnx.graphdef(model)
    for (pa, a), (pb, b) in zip(nnx.to_flat_state(nnx.state(same)), nnx.to_flat_state(nnx.state(model))):
        assert pa == pb and type(a) is type(b)
        np.testing.assert_array_equal(a.get_value(), b.get_value())
    merged.blocks[0].attn.q_proj.calls[...] = 7
    assert int(other_state(merged)["blocks/0/attn/q_proj/calls"]) == 7
