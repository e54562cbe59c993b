"""Rows: recipe format columns and bits against the recipe definitions, status mapping, fixed columns."""
import pytest

from lowprec.sweeps.plan import config_hash, plan_runs
from lowprec.sweeps.rows import code_version, make_row, recipe_columns
from lowprec.sweeps.spec import load_sweep

FIXED = ["run_id", "recipe", "n_params", "n_params_total", "tokens", "flops", "final_val_loss", "status"]


@pytest.mark.parametrize("name, bits, emb", [
    ("bf16", (16, 16, 16), (8, 7, None)),
    ("fp8_tensorwise", (8, 8, 8), (4, 3, None)),  # E4M3 forward, E5M2 gradients: bits are element bits
    ("mxfp8", (8, 8, 8), (4, 3, 32)),
    ("mxfp4", (4, 4, 4), (2, 1, 32)),
    ("nvfp4", (4, 4, 4), (2, 1, 16)),
    ("fp_e3m2_b64_e8m0", (6, 6, 6), (3, 2, 64)),
    ("mxint8", (8, 8, 8), (None, None, None)),
])
def test_recipe_columns(name, bits, emb):
    cols = recipe_columns(name)
    assert (cols["bits_w"], cols["bits_a"], cols["bits_g"]) == bits
    assert (cols["exp_bits"], cols["man_bits"], cols["block"]) == emb


def test_recipe_columns_describe_every_operand():
    cols = recipe_columns("fp8_tensorwise")
    assert cols["fmt_fprop_lhs"].startswith("e4m3") and cols["fmt_dgrad_lhs"].startswith("e5m2")
    assert sorted(k for k in cols if k.startswith("fmt_")) == sorted(
        f"fmt_{r}_{s}" for r in ("fprop", "dgrad", "wgrad") for s in ("lhs", "rhs"))
    assert recipe_columns("bf16")["fmt_wgrad_rhs"] == "bf16"


@pytest.fixture
def run(write_sweep):
    (r,) = plan_runs(load_sweep(write_sweep(grid={"width": [32], "depth": [1], "head_dim": 16, "tokens": [512],
                                                  "recipe": ["mxfp4"]})))
    return r


def test_rows_of_finished_diverged_and_failed_runs(run):
    summary = {"status": "ok", "tokens": 512, "flops": 1e9, "final_val_loss": 3.0, "final_train_loss": 3.1,
               "final_val_bpb": 4.3, "device": "cpu", "wall_s": 2.0, "diverged_at_step": None}
    row = make_row("sw", run, summary)
    assert list(row)[:8] == FIXED
    assert (row["status"], row["final_val_loss"], row["flops"], row["n_params"]) == ("ok", 3.0, 1e9, run.n_params)
    assert row["bits_w"] == 4 and row["sweep_id"] == "sw" and row["seed"] == 0 and row["steps"] == 2
    assert row["config_hash"] == config_hash(run.config) and row["code_version"] == code_version()
    assert row["divergence"] is None and row["error"] is None and row["mfu"] is None
    nan = make_row("sw", run, summary | {"status": "nan", "diverged_at_step": 1})
    assert (nan["status"], nan["divergence"], nan["diverged_at_step"]) == ("diverged", "nan", 1)
    failed = make_row("sw", run, None, "RuntimeError: boom")
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert failed["final_val_loss"] is None and failed["tokens"] == run.tokens and failed["flops"] > 0
    with pytest.raises(ValueError, match="not one of"):
        make_row("sw", run, summary | {"status": "stopped"})
    with pytest.raises(ValueError, match="exactly one of summary"):
        make_row("sw", run, None)
