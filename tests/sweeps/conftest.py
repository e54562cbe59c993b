"""Shared sweep fixtures: a tiny base training config on a synthetic corpus, sweep files, and a
cheap trainer that writes summary.json from a known Chinchilla law (for the runner's bookkeeping)."""
import json
import math
from pathlib import Path

import pytest
import yaml

from lowprec.models import flops_per_token, param_counts

LAW = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
TINY_BASE = {
    "model": {"vocab_size": 64, "seq_len": 32, "n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_multiple_of": 32},
    "data": {"batch_size": 8, "val_tokens": 512},
    "optim": {"lr": 1.0e-2},
    "train": {"log_every": 100, "eval_every": 0, "ckpt_every": 2},
    "mesh": {"data": 1},
}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from lowprec.data.dataset import synthetic_corpus

    return synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_tokens=50_000, vocab_size=64, seed=0)


@pytest.fixture
def base_yaml(tmp_path):
    """Path of a tiny training config (no corpus: tests that train add data.corpus)."""
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(TINY_BASE))
    return path


@pytest.fixture
def write_sweep(tmp_path, base_yaml):
    """write_sweep(**layout) -> path of a sweep file using base.yaml, out in tmp_path/out."""

    def write(*, name="t", overrides=(), **layout):
        data = {"name": name, "base": base_yaml.name, "out": str(tmp_path / "out"), **layout}
        if overrides:
            data["overrides"] = list(overrides)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


class LawTrainer:
    """Stands in for lowprec.train.train: loss from LAW (x `penalty` per recipe), summary.json written
    like the loop does; `fail` / `diverge` name run-dir substrings that raise / go NaN; `interrupt_after`
    raises KeyboardInterrupt (a kill) when that many runs have been trained."""

    def __init__(self, *, penalty=None, fail=(), diverge=(), interrupt_after=None):
        self.penalty, self.fail, self.diverge = penalty or {}, fail, diverge
        self.interrupt_after, self.calls = interrupt_after, []

    def __call__(self, cfg):
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        run_dir = Path(cfg.train.run_dir)
        self.calls.append(run_dir.name)
        if any(s in run_dir.name for s in self.fail):
            raise RuntimeError("boom")
        n = param_counts(cfg.model)["non_embedding"]
        tokens = cfg.train.steps * cfg.data.batch_size * cfg.model.seq_len
        loss = (LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]) \
            * self.penalty.get(cfg.precision.recipe, 1.0)
        status = "nan" if any(s in run_dir.name for s in self.diverge) else "ok"
        summary = {"status": status, "diverged_at_step": 3 if status == "nan" else None, "steps": cfg.train.steps,
                   "steps_done": cfg.train.steps, "final_train_loss": loss, "final_val_loss": loss,
                   "final_val_bpb": loss / math.log(2), "tokens": tokens,
                   "flops": flops_per_token(cfg.model)["total"] * tokens, "n_params": n, "device": "cpu",
                   "tokens_per_s": 1.0e5, "mfu": None, "wall_s": 1.0}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary


@pytest.fixture
def law_trainer():
    return LawTrainer
