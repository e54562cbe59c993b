"""Peer FP8 libraries in the train-step benchmark (CPU, one tiny block): rows, real FP8 GEMMs on
exactly the projections, and live delayed-scaling state."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowprec.bench import train, train_peers
from lowprec.bench.train_peers import FlaxFp8Dot, FlaxFp8Meta
from lowprec.train.config import load_config
from lowprec.train.setup import build

SIZES = dict(batch=4, seq_len=16, steps=1, warmup=1, overrides=["model.n_layers=1"])  # batch 4: 4 CPU devices
PROJECTIONS = {f"blocks/0/{n}_proj" for n in ("attn/q", "attn/k", "attn/v", "attn/o", "mlp/gate", "mlp/up", "mlp/down")}


def _build(tmp_path, peer: str):
    """(the run, the plugged model) of one tiny block with `peer` on its projections."""
    corpus = train.synthetic_corpus_for(tmp_path, vocab_size=256, seq_len=16, batch=4)
    cfg = load_config(overrides=["model=tiny", "model.n_layers=1", "model.seq_len=16", "data.batch_size=4",
                                 f"data.corpus={corpus}", "data.val_tokens=16", "train.steps=10"])
    plugged = []
    run = build(cfg, lambda model: plugged.append(train_peers.plug(peer, model)) or plugged[0])
    return run, plugged[0]


def _fp8_dots(run) -> tuple[int, int]:
    """(e4m3 x e4m3, e5m2 x e4m3) dot_generals in the lowered train step's StableHLO."""
    batch = jax.device_put(run.dataset[0], run.shardings["batch"])
    hlo = run.train_step.lower(run.state, run.opt_state, batch, jnp.int32(0)).as_text()
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    return (sum("f8E4M3FN" in d and "f8E5M2" not in d for d in dots),
            sum("f8E4M3FN" in d and "f8E5M2" in d for d in dots))


def test_unknown_peer_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid names: flax_fp8, qwix_fp8"):
        train.run_train(lambda r: None, models=["tiny"], recipe_names=["bf16"], workdir=tmp_path, peers=["te_fp8"],
                        **SIZES)


@pytest.mark.slow
def test_flax_fp8_row(tmp_path):
    rows = []
    train.run_train(rows.append, models=["tiny"], recipe_names=["bf16"], workdir=tmp_path, peers=["flax_fp8"], **SIZES)
    assert [r["recipe"] for r in rows] == ["bf16", "flax_fp8"]
    assert "error" not in rows[1], rows[1]
    assert math.isfinite(rows[1]["loss"]) and rows[1]["vs_bf16"] > 0


@pytest.mark.slow
def test_flax_fp8_runs_fp8_on_the_projections_and_updates_its_state(tmp_path):
    run, model = _build(tmp_path, "flax_fp8")
    dots = {"/".join(map(str, p)) for p, m in nnx.iter_modules(model) if isinstance(m, FlaxFp8Dot)}
    assert dots == {f"{p}/dot_general" for p in PROJECTIONS}
    meta = {k for k, _, var in run.model_def.other if isinstance(var, FlaxFp8Meta)}
    assert meta == set(run.model_def.grad_histories) and len(meta) == 7 * 6  # scale + history of x, w, grad
    assert _fp8_dots(run) == (7, 14)  # forward; dgrad and wgrad with e5m2 gradients

    before = {k: np.asarray(run.state["other"][k]) for k in meta}
    state, opt = run.state, run.opt_state
    for i in range(2):  # scales follow the history of the step before
        batch = jax.device_put(run.dataset[i], run.shardings["batch"])
        state, opt, metrics = run.train_step(state, opt, batch, jnp.int32(i))
    assert math.isfinite(float(metrics["loss"]))
    assert not [k for k in meta if np.array_equal(before[k], np.asarray(state["other"][k]))]


@pytest.mark.slow
def test_qwix_fp8_row(tmp_path):
    pytest.importorskip("qwix")
    corpus = train.synthetic_corpus_for(tmp_path, vocab_size=256, seq_len=16, batch=4)
    row = train._case("tiny", "bf16", corpus=corpus, peer="qwix_fp8", **SIZES)
    assert math.isfinite(row["loss"]) and row["tokens_per_s"] > 0
    assert _fp8_dots(_build(tmp_path, "qwix_fp8")[0]) == (7, 14)  # its module_path matches the projections only
