"""Checkpoint round trip: arrays (incl. optimizer state) bitwise, meta as JSON, keep-last-k."""
import jax
import jax.numpy as jnp
import numpy as np

from lowprec.train import checkpoint
from lowprec.train.config import OptimConfig
from lowprec.train.optim import make_optimizer


def test_round_trip_and_keep_last(tmp_path):
    params = {"blocks/0/w": jax.random.normal(jax.random.key(0), (4, 3)), "norm/scale": jnp.ones(3)}
    other = {"blocks/0/amax": jnp.arange(5, dtype=jnp.float32)}
    opt = make_optimizer(OptimConfig())
    opt_state = opt.init(params)
    _, opt_state = opt.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    tree = {"state": {"params": params, "other": other}, "opt": opt_state}
    mgr = checkpoint.manager(tmp_path / "ckpt", keep_last=2)
    for step in (1, 2, 3):
        checkpoint.save(mgr, step, tree, {"step": step, "config": {"a": [1, 2]}})
    assert mgr.all_steps() == [2, 3]
    assert checkpoint.read_meta(mgr, 3) == {"step": 3, "config": {"a": [1, 2]}}
    rep = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, opt_back = checkpoint.restore(mgr, 3, checkpoint.abstract(tree, jax.tree.map(lambda _: rep, tree)))
    assert jax.tree.structure(opt_back) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves((state, opt_back)), jax.tree.leaves((tree["state"], opt_state))):
        np.testing.assert_array_equal(a, b)
    latest = checkpoint.latest_params(tmp_path / "ckpt")
    np.testing.assert_array_equal(latest["blocks/0/w"], params["blocks/0/w"])
