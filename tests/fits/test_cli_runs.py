import argparse
import csv
import json

from lowprec.fits import cli_runs

ROWS = [
    {"run_id": "r1", "recipe": "bf16", "n_params": 1e6, "tokens": 2e7, "final_val_loss": 3.25, "final_val_bpb": 1.1,
     "status": "ok"},
    {"run_id": "r2", "recipe": "fp8", "n_params": 2e6, "tokens": 4e7, "final_val_loss": None, "status": "diverged"},
    {"run_id": "r3", "recipe": "bf16", "n_params": 4e6, "tokens": 8e7, "final_val_loss": 3.0, "status": "ok",
     "flops_6ND": 1.92e15},
]


def _run(tmp_path, *argv):
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    parser = argparse.ArgumentParser()
    cli_runs.configure_parser(parser)
    return cli_runs.main(parser.parse_args([str(path), *argv]))


def test_runs_grouped_fixed_width(tmp_path, capsys):
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "== recipe bf16: 2 runs, 2 ok =="
    header = out[1]
    assert header.split() == ["run_id", "n_params", "tokens", "flops", "final_val_loss", "bpb", "status"]
    r1 = out[3]
    assert r1.startswith("r1 ") and len(r1) == len(header)
    assert "1.200e+14" in r1 and "3.25" in r1 and "1.1" in r1  # flops = 6 N D when not recorded
    assert "1.920e+15" in out[4]
    fp8 = out.index("== recipe fp8: 1 runs, 0 ok ==")
    assert out[fp8 + 3].split()[-1] == "diverged" and " - " in out[fp8 + 3]


def test_runs_csv_export(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert _run(tmp_path, "--csv", str(out)) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == ["r1", "r2", "r3"]
    assert float(rows[2]["flops_6ND"]) == 1.92e15 and rows[1]["final_val_loss"] == "" and rows[0]["flops_6ND"] == ""
