"""Sweep-file parsing: both layouts, path resolution, and strict errors naming key and choices."""
import pytest

from lowprec.sweeps.spec import load_sweep, parse_sweep


def _grid(**axes):
    return {"model": ["tiny"], "tokens": [1000], **axes}


def test_grid_fields_and_defaults(write_sweep, base_yaml, tmp_path):
    sweep = load_sweep(write_sweep(grid={"width": [32, 64], "depth": 1, "head_dim": 16, "tokens_per_param": [10, 20],
                                         "recipe": ["bf16", "fp_e3m2_b32_e8m0"], "seed": [0, 1], "lr": "auto",
                                         "batch_size": "auto"}))
    assert sweep.base == (str(base_yaml),) and sweep.out == str(tmp_path / "out") and sweep.layout == "grid"
    assert (sweep.widths, sweep.depths, sweep.head_dim) == ((32, 64), (1,), 16)
    assert sweep.tokens_per_param == (10.0, 20.0) and sweep.tokens == ()
    assert sweep.recipes == ("bf16", "fp_e3m2_b32_e8m0") and sweep.seeds == (0, 1)
    assert sweep.lrs == "auto" and sweep.batch_size == "auto"


def test_isoflop_and_default_out(base_yaml):
    sweep = parse_sweep({"name": "iso", "base": str(base_yaml),
                         "isoflop": {"budgets": [1e15, 3e15], "model": ["10m", "30m"], "per_budget": 1,
                                     "ratio": 25, "lr": [1e-3, 2e-3]}})
    assert sweep.layout == "isoflop" and sweep.budgets == (1e15, 3e15) and sweep.per_budget == 1
    assert sweep.ratio == 25.0 and sweep.lrs == (1e-3, 2e-3) and sweep.out == "runs/sweeps/iso"
    assert sweep.seeds is None and sweep.batch_size is None and sweep.recipes == ("bf16",)


def test_base_resolves_against_the_repo_root():
    sweep = parse_sweep({"name": "x", "base": "configs/train/tiny_cpu.yaml", "grid": _grid()}, sweep_dir="/nonexistent")
    assert sweep.base[0].endswith("configs/train/tiny_cpu.yaml")


@pytest.mark.parametrize("data, match", [
    ({"name": "x", "base": "B", "grid": _grid(), "outt": "o"}, r"unknown key outt.*valid keys: name, base, overrides, out"),
    ({"name": "x", "base": "B", "grid": _grid(recipes=["bf16"])}, r"unknown key grid\.recipes.*grid\.recipe"),
    ({"name": "x", "base": "B", "isoflop": {"budgets": [1e15], "model": ["tiny"], "tokens": [5]}},
     r"unknown key isoflop\.tokens in the sweep file; valid keys: isoflop\.model"),
    ({"name": "x", "base": "B"}, "exactly one layout"),
    ({"name": "x", "base": "B", "grid": _grid(), "isoflop": {}}, "exactly one layout"),
    ({"base": "B", "grid": _grid()}, "needs key 'name'"),
    ({"name": "a/b", "base": "B", "grid": _grid()}, "without '/'"),
    ({"name": "x", "base": "missing.yaml", "grid": _grid()}, "'missing.yaml' not found"),
    ({"name": "x", "base": "B", "grid": {"tokens": [1]}}, "either model .* or width and depth"),
    ({"name": "x", "base": "B", "grid": {"model": ["tiny"], "width": [64], "tokens": [1]}}, "either model"),
    ({"name": "x", "base": "B", "grid": {"width": [64], "tokens": [1]}}, "width and depth must be given together"),
    ({"name": "x", "base": "B", "grid": {"model": ["tiny"], "tokens": [1], "tokens_per_param": [2]}}, "exactly one of tokens"),
    ({"name": "x", "base": "B", "grid": {"model": ["tiny"]}}, "exactly one of tokens"),
    ({"name": "x", "base": "B", "grid": _grid(tokens=[1.5])}, "whole token counts"),
    ({"name": "x", "base": "B", "grid": _grid(tokens=[0])}, r"grid\.tokens: values must be > 0"),
    ({"name": "x", "base": "B", "grid": _grid(tokens=[])}, "must not be empty"),
    ({"name": "x", "base": "B", "grid": _grid(recipe=["bf16", "bf16"])}, "repeats a value"),
    ({"name": "x", "base": "B", "grid": _grid(seed=[-1])}, ">= 0"),
    ({"name": "x", "base": "B", "grid": _grid(lr="fast")}, r"grid\.lr: expected float"),
    ({"name": "x", "base": "B", "grid": _grid(batch_size=0)}, "batch_size must be a positive number"),
    ({"name": "x", "base": "B", "grid": _grid(head_dim=32)}, "head_dim applies to width/depth"),
    ({"name": "x", "base": "B", "isoflop": {"model": ["tiny"]}}, "isoflop needs budgets"),
])
def test_strict_errors(data, match, base_yaml):
    data = {k: (str(base_yaml) if v == "B" else v) for k, v in data.items()}
    with pytest.raises(ValueError, match=match):
        parse_sweep(data)


def test_duplicate_yaml_keys_raise(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: a\nname: b\n")
    with pytest.raises(ValueError, match="set twice"):
        load_sweep(path)
