"""Planning: run ids, token/step arithmetic, isoflop layout, auto LR, override conflicts, shards."""
import math

import pytest

from lowprec.models import load_model_config, param_counts
from lowprec.sweeps.plan import AUTO_BATCH_TOKENS, UNHASHED, auto_lr, config_hash, isoflop_models, plan_runs, shard
from lowprec.sweeps.spec import load_sweep

TOKENS_PER_STEP = 8 * 32  # TINY_BASE: batch 8 x seq 32


def _n(width, depth=1):
    """Non-embedding N of the tiny base at (width, depth), by hand: per block 4d^2 + 3·d·hidden + 2d, + final d."""
    hidden = 32 * math.ceil(int(8 / 3 * width) / 32)
    return depth * (4 * width**2 + 3 * width * hidden + 2 * width) + width


def test_grid_runs_ids_and_configs(write_sweep, tmp_path):
    path = write_sweep(grid={"width": [32, 64], "depth": [1], "head_dim": 16, "tokens": [1000, 2560],
                             "recipe": ["bf16", "mxfp4"], "seed": [3]})
    runs = plan_runs(load_sweep(path))
    assert [r.run_id for r in runs] == [
        "d32L1-bf16-D1024-s3", "d32L1-mxfp4-D1024-s3", "d32L1-bf16-D2560-s3", "d32L1-mxfp4-D2560-s3",
        "d64L1-bf16-D1024-s3", "d64L1-mxfp4-D1024-s3", "d64L1-bf16-D2560-s3", "d64L1-mxfp4-D2560-s3"]
    assert [r.run_id for r in plan_runs(load_sweep(path))] == [r.run_id for r in runs]  # deterministic
    r = runs[5]
    cfg = r.config
    assert (r.steps, r.tokens) == (4, 1024) and r.tokens == round(1000 / TOKENS_PER_STEP) * TOKENS_PER_STEP
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers) == (64, 4, 1)
    assert cfg.precision.recipe == "mxfp4" and cfg.train.seed == 3 and cfg.train.steps == 4
    assert cfg.train.run_dir == str(tmp_path / "out" / "runs" / r.run_id) and cfg.optim.lr == 1e-2
    assert r.n_params == param_counts(cfg.model)["non_embedding"] == _n(64)


def test_tokens_per_param_auto_lr_and_batch(write_sweep):
    runs = plan_runs(load_sweep(write_sweep(grid={"width": [32], "depth": [2], "head_dim": 16,
                                                  "tokens_per_param": [20], "lr": "auto", "batch_size": "auto"})))
    (r,) = runs
    assert r.batch_size == AUTO_BATCH_TOKENS // 32 and r.config.data.batch_size == r.batch_size
    assert r.steps == max(1, round(20 * _n(32, 2) / (r.batch_size * 32)))
    assert r.lr == r.config.optim.lr == pytest.approx(1.2e-3)  # below N(30m): held at the table's end
    assert r.run_id == f"d32L2-bf16-D{r.tokens}-s0"  # auto lr is not an axis value of the id


def test_explicit_lrs_enter_the_run_id(write_sweep):
    runs = plan_runs(load_sweep(write_sweep(grid={"model": ["tiny"], "tokens": [8192], "lr": [1e-3, 3e-4]})))
    assert [r.run_id.rsplit("-", 1)[1] for r in runs] == ["lr0.001", "lr0.0003"]
    assert [r.config.optim.lr for r in runs] == [1e-3, 3e-4] and runs[0].config.model.d_model == 128


def test_auto_lr_follows_the_parity_table():
    n = {name: param_counts(load_model_config(name))["non_embedding"] for name in ("30m", "50m", "100m", "200m")}
    for name, lr in (("30m", 1.2e-3), ("50m", 1.2e-3), ("100m", 6e-4), ("200m", 3e-4)):
        assert auto_lr(n[name]) == pytest.approx(lr, rel=1e-12)
    assert auto_lr(math.sqrt(n["100m"] * n["200m"])) == pytest.approx(math.sqrt(6e-4 * 3e-4), rel=1e-12)
    assert auto_lr(1e12) == pytest.approx(3e-4) and auto_lr(1e3) == pytest.approx(1.2e-3)
    with pytest.raises(ValueError, match="N > 0"):
        auto_lr(0)


def test_isoflop_layout(write_sweep):
    widths = [32, 64, 128]
    budgets = [1e10, 1e12]
    runs = plan_runs(load_sweep(write_sweep(isoflop={"width": widths, "depth": [1], "head_dim": 16,
                                                     "budgets": budgets})))
    assert len(runs) == 6
    for r in runs:
        assert r.n_params == _n(int(r.model[1:].split("L")[0]))
        assert r.steps == max(1, round(r.budget / (6 * r.n_params) / TOKENS_PER_STEP))
        assert abs(6 * r.n_params * r.tokens - r.budget) <= 6 * r.n_params * TOKENS_PER_STEP / 2
    nearest = plan_runs(load_sweep(write_sweep(isoflop={"width": widths, "depth": [1], "head_dim": 16,
                                                        "budgets": budgets, "per_budget": 2, "ratio": 20})))
    assert [(r.budget, r.model) for r in nearest] == [(1e10, "d32L1"), (1e10, "d64L1"), (1e12, "d64L1"),
                                                      (1e12, "d128L1")]


def test_isoflop_models_picks_the_nearest_in_log_n():
    n = {"a": 1e5, "b": 1e6, "c": 1e7, "d": 1e8}
    budget = 6 * 20 * 1e6**2  # N* = 1e6
    assert isoflop_models(budget, n, 1, 20) == ["b"]
    assert isoflop_models(budget, n, 3, 20) == ["a", "b", "c"]  # a and c tie; file order
    assert isoflop_models(budget, n, None, 20) == list(n)


@pytest.mark.parametrize("where, text, axis", [
    ("sweep", "precision.recipe=mxfp4", "recipe"), ("sweep", "train.steps=5", "tokens"),
    ("sweep", "model.d_model=64", "width/depth"), ("cli", "train.run_dir=/x", "out"),
    ("cli", "train.stop_at_step=2", "runs every run"),
])
def test_overrides_of_axis_keys_raise(write_sweep, where, text, axis):
    grid = {"width": [32], "depth": [1], "head_dim": 16, "tokens": [512]}
    path = write_sweep(grid=grid, overrides=[text] if where == "sweep" else ())
    with pytest.raises(ValueError, match=f"sets {text.split('=')[0]}, which the sweep sets per run.*{axis}"):
        plan_runs(load_sweep(path), [text] if where == "cli" else [])


def test_other_errors(write_sweep, base_yaml):
    with pytest.raises(ValueError, match="unknown recipe 'fp3'.*valid names: bf16"):
        plan_runs(load_sweep(write_sweep(grid={"model": ["tiny"], "tokens": [512], "recipe": ["fp3"]})))
    with pytest.raises(ValueError, match="round to the same run"):
        plan_runs(load_sweep(write_sweep(grid={"width": [32], "depth": [1], "head_dim": 16, "tokens": [1000, 1010]})))
    with pytest.raises(ValueError, match="not a multiple of head_dim"):
        plan_runs(load_sweep(write_sweep(grid={"width": [40], "depth": [1], "tokens": [512]})))
    with pytest.raises(ValueError, match="unknown key optim.lrr"):
        plan_runs(load_sweep(write_sweep(grid={"width": [32], "depth": [1], "head_dim": 16, "tokens": [512]})),
                  ["optim.lrr=1"])
    base_yaml.write_text(base_yaml.read_text() + "  stop_at_step: 1\n")  # appends to the train section
    with pytest.raises(ValueError, match="base config sets train.stop_at_step"):
        plan_runs(load_sweep(write_sweep(grid={"width": [32], "depth": [1], "head_dim": 16, "tokens": [512]})))


def test_shards_partition_the_plan(write_sweep):
    runs = plan_runs(load_sweep(write_sweep(grid={"width": [32, 64], "depth": [1], "head_dim": 16,
                                                  "tokens": [512, 1024, 2048]})))
    parts = [shard(runs, i, 4) for i in range(4)]
    assert sorted(r.run_id for p in parts for r in p) == sorted(r.run_id for r in runs)
    assert [r.run_id for r in parts[1]] == [runs[1].run_id, runs[5].run_id]
    with pytest.raises(ValueError, match="0 <= index < count"):
        shard(runs, 4, 4)


def test_config_hash_ignores_location_only(write_sweep):
    path = write_sweep(grid={"width": [32], "depth": [1], "head_dim": 16, "tokens": [512]})
    (a,) = plan_runs(load_sweep(path))
    (b,) = plan_runs(load_sweep(path), ["train.log_every=7"])
    (c,) = plan_runs(load_sweep(path), ["optim.b2=0.98"])
    assert config_hash(a.config) == config_hash(b.config) != config_hash(c.config)


def test_config_hash_of_keys_added_since_is_the_old_one_at_their_defaults(write_sweep):
    """model.fused_projections came after sweeps were recorded: at its default a config hashes as
    it did without the key (written out here); set, it hashes otherwise."""
    import hashlib
    import json

    from lowprec.typedconfig import to_dict

    path = write_sweep(grid={"width": [32], "depth": [1], "head_dim": 16, "tokens": [512]})
    (a,) = plan_runs(load_sweep(path))
    (f,) = plan_runs(load_sweep(path), ["model.fused_projections=true"])
    tree = to_dict(a.config)
    del tree["model"]["fused_projections"]
    for dotted in UNHASHED:
        del tree["train"][dotted.split(".")[1]]
    assert config_hash(a.config) == hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(f.config) != config_hash(a.config)
