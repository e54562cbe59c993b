import csv
import json

import numpy as np
import pytest

from lowprec.fits.table import from_rows, load_chinchilla_epoch_csv, load_runs, read_rows

ROWS = [
    {"run_id": "a", "recipe": "bf16", "n_params": 1e6, "tokens": 2e7, "final_val_loss": 3.0, "status": "ok", "bits_w": 16},
    {"run_id": "b", "recipe": "fp8", "n_params": 2e6, "tokens": 4e7, "final_val_loss": 2.9, "status": "ok", "bits_w": 8},
    {"run_id": "c", "recipe": "fp8", "n_params": 2e6, "tokens": 8e7, "final_val_loss": None, "status": "diverged"},
    {"run_id": "d", "recipe": "bf16", "n_params": 4e6, "tokens": 8e7, "final_val_loss": float("nan"), "status": "ok"},
]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_jsonl_keeps_ok_rows_and_lists_every_exclusion(tmp_path):
    path = tmp_path / "runs.jsonl"
    _write_jsonl(path, ROWS)
    t = load_runs(path)
    assert [r["run_id"] for r in t.rows] == ["a", "b"]
    assert [(e.run_id, e.reason) for e in t.excluded] == [
        ("c", "status=diverged"), ("d", "final_val_loss=nan is not a finite positive number")]
    assert t.recipes == ("bf16", "fp8")
    np.testing.assert_array_equal(t.array("bits_w"), [16, 8])
    assert t.select("fp8").excluded[0].run_id == "c"


def test_csv_reads_like_jsonl(tmp_path):
    jsonl, csv_path = tmp_path / "r.jsonl", tmp_path / "r.csv"
    _write_jsonl(jsonl, ROWS)
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in ROWS[0]} for r in ROWS)
    a, b = load_runs(jsonl), load_runs(csv_path)
    for name in ("n_params", "tokens", "final_val_loss", "bits_w"):
        np.testing.assert_array_equal(a.array(name), b.array(name))
    assert [e.reason for e in a.excluded] == [e.reason for e in b.excluded]


def test_missing_required_column_names_it_and_lists_present():
    rows = [{k: v for k, v in r.items() if k != "tokens"} for r in ROWS]
    with pytest.raises(ValueError, match=r"'tokens'.*present columns: run_id, recipe, n_params"):
        from_rows(rows)


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="suffix '.txt' not supported"):
        read_rows(tmp_path / "runs.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="must be an object"):
        read_rows(bad)
    with pytest.raises(ValueError, match="recipe 'int4' not in the runs table"):
        from_rows(ROWS).select("int4")
    with pytest.raises(ValueError, match="column 'bits_z' not in"):
        from_rows(ROWS).array("bits_z")


def test_epoch_csv_adapter(epoch_csv):
    t = load_chinchilla_epoch_csv(epoch_csv)
    raw = read_rows(epoch_csv)
    assert len(raw) == 245 and len(t) == 240 and len(t.excluded) == 5
    dropped = sorted(float(raw[e.row]["loss"]) for e in t.excluded)
    assert min(dropped) >= t.array("final_val_loss").max()
    assert max(dropped) == pytest.approx(5.005581996196243)
    first = t.rows[0]
    assert first["tokens"] == pytest.approx(first["flops"] / (6 * first["n_params"]))
