"""Delayed scaling in the train step: amax histories advance every micro-batch, bypass the gradient
norm, clipping and the optimizer, and survive a checkpoint round trip exactly."""
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import lowprec as lp
from lowprec.gemm.config import DelayedScaling
from lowprec.train import checkpoint
from lowprec.train.loop import train
from lowprec.train.optim import make_optimizer, make_schedule
from lowprec.train.state import split_model
from lowprec.train.step import make_train_step
from tests.train.test_loop import _losses

ONE_LAYER = ("model.n_layers=1", "train.steps=4", "precision.recipe=fp8_delayed")


def _saved_state(run_dir) -> dict:
    mgr = checkpoint.manager(run_dir / "ckpt", keep_last=1)
    out = mgr.restore(mgr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.device_get(out["state"]["state"])


@pytest.mark.slow  # ~20-40 s on 2 shared cores: compiles the FP8 Llama train and eval steps
def test_histories_advance_and_resume_exactly(tiny, tmp_path):
    """4 steps straight == 2 steps, checkpoint, a fresh train() restoring it, 2 more steps."""
    train(tiny(*ONE_LAYER, f"train.run_dir={tmp_path / 'a'}"))
    train(tiny(*ONE_LAYER, "train.stop_at_step=2", f"train.run_dir={tmp_path / 'b'}"))
    train(tiny(*ONE_LAYER, f"train.run_dir={tmp_path / 'b'}"))
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")  # bitwise
    a, b = _saved_state(tmp_path / "a"), _saved_state(tmp_path / "b")
    hist = [k for k in a["other"] if k.rsplit("/", 1)[-1] in ("amax_x", "amax_w", "amax_g")]
    assert len(hist) == 3 * 7 and set(a["other"]) == set(hist)  # 7 linears of one block; lm_head stays bf16
    for part in ("params", "other"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            np.testing.assert_array_equal(a[part][k], b[part][k], err_msg=k)
    for k in hist:  # one entry per step, newest first
        h = a["other"][k]
        assert (h[:4] > 0).all() and not h[4:].any(), k


class Toy(nnx.Module):
    """Embedding, two quantized linears, logits: a train-step model that compiles in a moment."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(64, 16, rngs=rngs)
        self.up = nnx.Linear(16, 32, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(32, 64, use_bias=False, rngs=rngs)

    def __call__(self, tokens):
        return self.out(jax.nn.relu(self.up(self.embed(tokens))))


def test_histories_bypass_norm_clipping_and_optimizer(tiny):
    """With amax_compute="most_recent" only a history's newest entry sets a scale, so huge older
    entries change no GEMM: the gradient norm and the clipped update must not change either."""
    cfg = tiny("precision.recipe=fp8_delayed", "optim.grad_accum=2", "optim.clip_norm=1e-3")
    recipe = lp.recipes.get("fp8_delayed").replace(delayed=DelayedScaling(history=8, amax_compute="most_recent"))
    model = lp.quantize_model(Toy(nnx.Rngs(0)), recipe)
    model_def, params, other = split_model(model)
    assert model_def.grad_histories == ("out/dot_general/amax_g", "up/dot_general/amax_g")
    optimizer = make_optimizer(cfg.optim)
    step = jax.jit(make_train_step(model_def, cfg, optimizer, make_schedule(cfg.schedule, cfg.optim.lr, 4)))
    opt_state = optimizer.init(params)
    keys = {k.key for path, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]
            for k in path if isinstance(k, jax.tree_util.DictKey)}
    assert keys == set(params) and not keys & set(other)

    tokens = jax.random.randint(jax.random.key(0), (8, 33), 0, 64)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    huge = {k: v.at[1:].set(1e30) if k in model_def.grad_histories else v for k, v in other.items()}
    out = [step({"params": params, "other": o}, opt_state, batch, jnp.int32(0)) for o in (other, huge)]
    (small_state, _, small_m), (huge_state, _, huge_m) = out
    assert small_m["gnorm"] == huge_m["gnorm"] > 1e-3  # clipping is active
    for k in params:
        np.testing.assert_array_equal(small_state["params"][k], huge_state["params"][k], err_msg=k)
    aw = float(jnp.max(jnp.abs(params["up/kernel"])))
    np.testing.assert_array_equal(small_state["other"]["up/dot_general/amax_w"][:3], [aw, aw, 0])  # per micro-batch
    for k in model_def.grad_histories:
        s, h = small_state["other"][k], huge_state["other"][k]
        np.testing.assert_array_equal(s[:2], h[:2], err_msg=k)
        assert (s[:2] > 0).all() and not s[2:].any() and h[2] == 0 and (h[3:] == 1e30).all(), k
