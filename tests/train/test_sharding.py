"""Mesh, sharding rules, and a 4-device (data 2 x fsdp 2) step equal to the 1-device step."""
import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lowprec.train.config import MeshConfig
from lowprec.train.setup import build
from lowprec.train.sharding import make_mesh, param_sharding, tree_shardings


def test_mesh_shapes_and_errors():
    assert len(jax.devices()) == 4  # tests/conftest.py forces 4 host devices
    assert dict(make_mesh(MeshConfig()).shape) == {"data": 4, "fsdp": 1}
    assert dict(make_mesh(MeshConfig(fsdp=2)).shape) == {"data": 2, "fsdp": 2}
    assert make_mesh(MeshConfig(data=1)).size == 1
    with pytest.raises(ValueError, match=r"mesh.data=4 x mesh.fsdp=2 does not fit 4 device"):
        make_mesh(MeshConfig(data=4, fsdp=2))
    with pytest.raises(ValueError, match=r"mesh.data=-1 x mesh.fsdp=3"):
        make_mesh(MeshConfig(fsdp=3))


def test_param_sharding_rule():
    mesh = make_mesh(MeshConfig(data=1, fsdp=4))
    assert param_sharding(mesh, (64, 256)).spec == P(None, "fsdp")  # largest divisible dim
    assert param_sharding(mesh, (256, 64)).spec == P("fsdp", None)
    assert param_sharding(mesh, (6, 64)).spec == P(None, "fsdp")
    assert param_sharding(mesh, (6, 3)).spec == P()
    params = {"a/kernel": np.zeros((8, 4)), "norm/scale": np.zeros(3)}
    opt = ({"count": np.zeros(()), "mu": params, "nu": params},)
    sh = tree_shardings(mesh, opt, params)
    assert sh[0]["mu"]["a/kernel"].spec == P("fsdp", None) and sh[0]["count"].spec == P()
    assert sh[0]["nu"]["norm/scale"].spec == P()


def _steps(cfg, n=3):
    run = build(cfg)
    state, opt, losses = run.state, run.opt_state, []
    for i in range(n):
        batch = jax.device_put(run.dataset[i], run.shardings["batch"])
        state, opt, m = run.train_step(state, opt, batch, np.int32(i))
        losses.append((float(m["loss"]), float(m["gnorm"])))
    return run, losses, jax.device_get(state["params"])


def test_sharded_accumulated_step_matches_single_device(tiny):
    """4 devices (data 2 x fsdp 2) with 2 micro-batches == 1 device with the whole batch at once."""
    small = ("model.compute_dtype=float32", "model.n_layers=1")
    run1, l1, p1 = _steps(tiny(*small, "mesh.data=1"))
    run4, l4, p4 = _steps(tiny(*small, "mesh.data=2", "mesh.fsdp=2", "optim.grad_accum=2"))
    assert run1.mesh.size == 1 and run4.mesh.size == 4
    kernel = run4.shardings["state"]["params"]["blocks/0/mlp/up_proj/kernel"]
    assert kernel.spec == P(None, "fsdp")
    np.testing.assert_allclose(l4, l1, rtol=1e-5)  # (loss, grad norm) per step
    assert l1[2][0] < l1[0][0]
    for k in p1:  # Adam's first steps are ~lr·sign(g): rounding in tiny gradients can flip a few, hence atol
        np.testing.assert_allclose(p4[k], p1[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("mesh", [("mesh.data=4",), ("mesh.data=2", "mesh.fsdp=2")])
def test_accumulated_micro_batches_stay_on_their_devices(tiny, mesh):
    """With grad_accum each device computes its own rows of every micro-batch: the compiled step
    gathers no token batch and runs the model on batch_size / (grad_accum x devices) rows."""
    run = build(tiny("model.n_layers=1", "optim.grad_accum=2", *mesh))
    batch = jax.device_put(run.dataset[0], run.shardings["batch"])
    hlo = run.train_step.lower(run.state, run.opt_state, batch, np.int32(0)).compile().as_text()
    (b, t), accum = batch["inputs"].shape, 2
    assert not re.findall(r"= s32\[[0-9,]*\]\S* all-gather", hlo)
    assert f"s32[{b // (accum * run.mesh.size)},{t}]" in hlo and f"s32[{b // accum},{t}]" not in hlo


def test_projections_of_one_input_share_its_amax_across_devices(tiny, monkeypatch):
    """Data parallel: q/k/v and gate/up read one input each. Sharing its amax (one reduction, hence one
    all-reduce) saves 3 scalar all-reduces per layer; XLA merges neither the all-reduces nor the casts
    behind them by itself."""
    import re

    import jax.numpy as jnp

    from lowprec.bench.hlo import collective_schedule
    from lowprec.gemm.config import Recipe

    def compiled(cfg):
        run = build(cfg)
        batch = jax.device_put(run.dataset[0], run.shardings["batch"])
        hlo = run.train_step.lower(run.state, run.opt_state, batch, jnp.asarray(0, jnp.int32)).compile().as_text()
        scalars = sum(a.nbytes // 4 for a in collective_schedule(hlo).all_reduces if a.nbytes < 64)
        return scalars, len(re.findall(r"= f8e4m3fn\[[^\]]*\]\{[^}]*\} (?:fusion|convert)\(", hlo))

    cfg = tiny("mesh.data=2", "model.n_layers=1", "precision.recipe=fp8_tensorwise_pow2")
    shared = compiled(cfg)
    monkeypatch.setattr(Recipe, "takes_lhs_amax", property(lambda self: False))
    apart = compiled(cfg)
    assert shared[0] == apart[0] - 3 and shared[1] < apart[1], (shared, apart)


def test_shared_amax_changes_no_bit_of_a_training_step(tiny, monkeypatch):
    """Two fp8 steps with and without the shared amax: identical parameters, bit for bit, when XLA
    keeps every rounding the program asks for. (With XLA's default excess precision, fusion choices
    decide whether some bf16 roundings happen, so any change of fusion can move the low bits.)"""
    import jax.numpy as jnp

    from lowprec.gemm.config import Recipe

    def two_steps(cfg):
        run = build(cfg)
        batch = jax.device_put(run.dataset[0], run.shardings["batch"])
        step = run.train_step.lower(run.state, run.opt_state, batch, jnp.asarray(0, jnp.int32)).compile(
            compiler_options={"xla_allow_excess_precision": False})
        state, opt = run.state, run.opt_state
        for i in range(2):
            state, opt, _ = step(state, opt, jax.device_put(run.dataset[i], run.shardings["batch"]), jnp.asarray(i, jnp.int32))
        return jax.device_get(state["params"])

    cfg = tiny("precision.recipe=fp8_tensorwise")
    shared = two_steps(cfg)
    monkeypatch.setattr(Recipe, "takes_lhs_amax", property(lambda self: False))
    apart = two_steps(cfg)
    for k in shared:
        np.testing.assert_array_equal(shared[k], apart[k], err_msg=k)
