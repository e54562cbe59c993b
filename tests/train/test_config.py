"""Train config: precedence, strict errors, every preset, and the golden default tree."""
from pathlib import Path

import pytest
import yaml

from lowprec.train.config import default_tree, dump_config, load_config

ROOT = Path(__file__).resolve().parents[2]

GOLDEN = """\
model:
  vocab_size: <required>
  seq_len: <required>
  n_layers: <required>
  d_model: <required>
  n_heads: <required>
  n_kv_heads: null
  mlp_ratio: 2.6666666666666665
  mlp_multiple_of: 256
  qk_norm: false
  tie_embeddings: false
  rope_theta: 10000.0
  norm_eps: 1.0e-06
  param_dtype: float32
  compute_dtype: bfloat16
  init_std: 0.02
  attention: auto
  fused_projections: false
data:
  corpus: default
  batch_size: 32
  seed: 0
  val_tokens: 131072
optim:
  lr: 0.0006
  b1: 0.9
  b2: 0.95
  eps: 1.0e-08
  weight_decay: 0.1
  clip_norm: 1.0
  grad_accum: 1
  z_loss: 0.0
schedule:
  kind: cosine
  warmup_fraction: 0.1
  warmup_steps: null
  final_fraction: 0.1
  decay_fraction: 0.2
precision:
  recipe: bf16
  keep_bf16:
  - ^lm_head$
  keep_first_blocks: null
  keep_last_blocks: null
  mfu_peak: bf16
train:
  steps: 1000
  seed: 0
  log_every: 10
  eval_every: 200
  ckpt_every: 500
  keep_last: 2
  run_dir: runs/default
  stop_at_step: null
  spike_factor: 2.0
  spike_patience: 20
  tensorboard: false
mesh:
  data: -1
  fsdp: 1
"""


def test_golden_default_tree():
    assert yaml.safe_dump(default_tree(), sort_keys=False) == GOLDEN


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_train_preset_parses(path):
    cfg = load_config([path])
    assert cfg.model.n_layers >= 1 and cfg.train.steps >= 1


def test_precedence_defaults_file_cli(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("model: tiny\noptim: {lr: 1e-3, b2: 0.98}\ntrain: {steps: 50}\n")
    b = tmp_path / "b.yaml"
    b.write_text("optim: {lr: 2e-3}\n")
    cfg = load_config([a, b], ["train.steps=7", "model.n_layers=1", "precision.keep_bf16=[x]"])
    assert cfg.optim.lr == 2e-3 and cfg.optim.b2 == 0.98 and cfg.optim.b1 == 0.9  # file b > file a > default
    assert cfg.train.steps == 7 and cfg.model.n_layers == 1 and cfg.model.d_model == 128
    assert cfg.precision.keep_bf16 == ("x",)
    assert load_config([], ["model=30m"]).model.d_model == 640


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config([], ["model=1b", "optim.lr=3e-4", "schedule.kind=wsd"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config([path]) == cfg


@pytest.mark.parametrize("overrides,match", [
    (["model=tiny", "optim.learning_rate=1"], r"unknown key optim\.learning_rate; valid keys: optim\.lr, optim\.b1"),
    (["model=tiny", "optimizer.lr=1"], r"unknown key optimizer; valid keys: model, data, optim"),
    (["model=tiny", "optim.lr=fast"], r"optim\.lr: expected float, got str 'fast'"),
    (["model=tiny", "train.steps=1.5"], r"train\.steps: expected int, got float"),
    (["model=tiny", "train.tensorboard=1"], r"train\.tensorboard: expected bool, got int"),
    (["model=tiny", "schedule.kind=linear"], r"schedule\.kind: 'linear' is not one of 'cosine', 'wsd', 'constant'"),
    (["model=tiny", "optim.lr=1", "optim.lr=2"], r"override key optim\.lr is set twice"),
    (["model=tiny", "optim.lr"], r"must look like section\.key=value"),
    (["model=nope"], r"unknown model preset 'nope'"),
    (["optim.lr=1"], r"the model section is required"),
    (["model=tiny", "optim.b2=1.0"], r"optim\.b2 must be in \[0, 1\)"),
    (["model=tiny", "train.stop_at_step=2000"], r"train\.stop_at_step=2000 is beyond train\.steps=1000"),
    (["model=tiny", "mesh.data=0"], r"mesh\.data must be -1 or >= 1"),
])
def test_strict_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config([], overrides)


def test_duplicate_yaml_key(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("model: tiny\noptim:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    with pytest.raises(ValueError, match=r"key 'lr' is set twice in the same YAML mapping \(line 4\)"):
        load_config([p])
