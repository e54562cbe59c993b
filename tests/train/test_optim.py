"""Schedules against hand values, and the optimizer against optax.adamw."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lowprec.train.config import OptimConfig, ScheduleConfig
from lowprec.train.optim import apply_updates, make_optimizer, make_schedule, warmup_steps


def _values(kind, total=10, **kw):
    fn = make_schedule(ScheduleConfig(kind=kind, **kw), 1.0, total)
    return np.asarray([float(fn(s)) for s in range(total)])


def test_cosine():
    v = _values("cosine", warmup_steps=2, final_fraction=0.1)
    p = (np.arange(2, 10) - 2) / 7
    np.testing.assert_allclose(v, [0.5, 1.0, *(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * p)))], rtol=1e-6)
    assert v[-1] == pytest.approx(0.1) and v[2] == pytest.approx(1.0)


def test_wsd():
    v = _values("wsd", warmup_steps=2, final_fraction=0.0, decay_fraction=0.4)
    np.testing.assert_allclose(v, [0.5, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0], rtol=1e-6, atol=1e-7)


def test_constant_and_warmup_fraction():
    np.testing.assert_allclose(_values("constant", warmup_fraction=0.3), [1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1, 1, 1],
                               rtol=1e-6)
    assert warmup_steps(ScheduleConfig(warmup_fraction=0.1), 1000) == 100
    with pytest.raises(ValueError, match="schedule.warmup_steps=20 exceeds train.steps=10"):
        make_schedule(ScheduleConfig(warmup_steps=20), 1.0, 10)


def test_matches_optax_adamw():
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, clip_norm=0.5)
    params = {"w": jnp.arange(6.0).reshape(2, 3) / 10, "scale": jnp.ones(3)}
    ref = optax.chain(optax.clip_by_global_norm(0.5),
                      optax.adamw(1e-2, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                                  mask={"w": True, "scale": False}))
    ours = make_optimizer(cfg)
    s_ref, s_ours, p_ref, p_ours = ref.init(params), ours.init(params), params, params
    for i in range(3):
        g = jax.tree.map(lambda x: jnp.sin(x * (i + 1)) * 3, p_ref)
        u, s_ref = ref.update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        u, s_ours = ours.update(g, s_ours, p_ours)
        p_ours = apply_updates(p_ours, u, jnp.float32(1e-2))
    for k in params:
        np.testing.assert_allclose(p_ours[k], p_ref[k], rtol=1e-6, err_msg=k)
    assert not np.allclose(p_ours["w"], params["w"])
