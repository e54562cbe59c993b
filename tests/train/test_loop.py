"""The training loop end to end on CPU: learning, exact resume, divergence, run-dir outputs."""
import json

import numpy as np
import pytest

from lowprec.train import checkpoint
from lowprec.train.checkpoint import latest_params
from lowprec.train import loop
from lowprec.train.loop import train
from lowprec.train.setup import build
from lowprec.typedconfig import to_dict


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_loss_decreases_and_outputs(tiny, tmp_path):
    summary = train(tiny("train.log_every=5", "train.eval_every=10"))
    run = tmp_path / "run"
    losses = _losses(run)
    assert summary["status"] == "ok" and summary["steps_done"] == 20 and sorted(losses) == [5, 10, 15, 20]
    assert losses[20] < losses[5] - 0.8  # starts near ln 64 = 4.16; the Markov source has < 1 nat/token
    assert summary["final_val_loss"] < 2.6
    assert summary["final_val_bpb"] == pytest.approx(summary["final_val_loss"] / np.log(2))  # 1 byte per token
    assert summary["mfu"] is None and summary["tokens"] == 20 * 8 * 32
    assert summary["n_params"] == 25248 and summary["flops"] == summary["flops_per_token"] * summary["tokens"]
    assert (run / "config.yaml").is_file() and "step 20/20 | loss" in (run / "log.txt").read_text()
    assert "MFU n/a" in (run / "log.txt").read_text()
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert [e["step"] for e in evals] == [10, 20]


def test_resume_is_exact(tiny, tmp_path):
    """20 steps straight == 10 steps, checkpoint, a fresh train() call restoring it, 10 more steps."""
    straight = train(tiny(f"train.run_dir={tmp_path / 'a'}"))
    first = train(tiny("train.stop_at_step=10", f"train.run_dir={tmp_path / 'b'}"))
    assert first["status"] == "stopped" and first["steps_done"] == 10
    mgr = checkpoint.manager(tmp_path / "b" / "ckpt", keep_last=3)
    assert checkpoint.read_meta(mgr, 10)["data_iterator"] == {"next_index": 10}  # grain state is checkpointed
    second = train(tiny(f"train.run_dir={tmp_path / 'b'}"))
    assert straight["status"] == second["status"] == "ok"
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 21))
    assert a == b  # bitwise: floats parsed back from the same JSON text
    pa, pb = latest_params(tmp_path / "a" / "ckpt"), latest_params(tmp_path / "b" / "ckpt")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_resume_rejects_a_changed_config(tiny, tmp_path):
    saved = tiny("train.stop_at_step=2")  # may differ in stop_at_step only
    mgr = checkpoint.manager(tmp_path / "run" / "ckpt", keep_last=1)
    checkpoint.save(mgr, 2, {"x": np.zeros(1)}, {"step": 2, "config": to_dict(saved)})
    with pytest.raises(ValueError, match=r"different config \(changed: optim\.lr, train\.seed\)"):
        train(tiny("optim.lr=1e-3", "train.seed=1"))


def test_resume_takes_a_key_added_since_as_its_default(tiny):
    """A run saved before a config key existed (here model.fused_projections) resumes with that
    key at its default, and is refused with another value."""
    saved = to_dict(tiny("train.stop_at_step=2"))
    del saved["model"]["fused_projections"]
    loop._check_resume_config(saved, tiny())
    with pytest.raises(ValueError, match=r"changed: model\.fused_projections\)"):
        loop._check_resume_config(saved, tiny("model.fused_projections=true"))


def test_data_iterator_state_must_match_the_step(tiny):
    run = build(tiny())
    assert next(loop._data_iterator(run, 3, {"next_index": 3}))["inputs"].tolist() == run.dataset[3]["inputs"].tolist()
    with pytest.raises(ValueError, match=r"data-iterator state \{'next_index': 5\} does not match step 2"):
        loop._data_iterator(run, 2, {"next_index": 5})


def test_absurd_lr_diverges(tiny, tmp_path):
    summary = train(tiny("model.n_layers=1", "train.steps=30", "optim.lr=1e4", "optim.clip_norm=null", "train.spike_patience=2",
                         "train.ckpt_every=1", "schedule.warmup_steps=0"))
    assert summary["status"] in ("nan", "diverged")
    k = summary["diverged_at_step"]
    assert 1 <= k < 30 and summary["steps_done"] == k
    saved = sorted(int(p.name) for p in (tmp_path / "run" / "ckpt").iterdir() if p.name.isdigit())
    assert saved and max(saved) < k  # the diverging step's state is never saved


@pytest.mark.slow
def test_quantized_recipe_learns(tiny, tmp_path):
    blocked = ("model.mlp_multiple_of=32",)  # SwiGLU hidden 96: FP4 blocks of 16 divide every K
    bf16 = train(tiny(*blocked, f"train.run_dir={tmp_path / 'bf16'}"))
    nvfp4 = train(tiny(*blocked, "precision.recipe=nvfp4"))
    assert nvfp4["status"] == "ok" and nvfp4["final_val_loss"] < 2.6
    assert nvfp4["final_val_loss"] != bf16["final_val_loss"]  # 2 blocks keep none in BF16: all quantized
    assert "nvfp4" in (tmp_path / "run" / "precision.txt").read_text()
