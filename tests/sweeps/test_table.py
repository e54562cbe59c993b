"""The runs table: appends, rebuilds after torn writes, no duplicates, retries, CSV."""
import json

from lowprec.fits.table import read_rows
from lowprec.sweeps import table


def _row(i, status="ok"):
    return {"run_id": f"r{i}", "recipe": "bf16", "n_params": 10 * (i + 1), "tokens": 100, "final_val_loss": 3.0,
            "status": status, "error": None}


def test_append_then_rebuild_is_the_same_table(tmp_path):
    for i in (2, 0, 1):
        table.append_row(tmp_path, tmp_path / "runs" / f"r{i}", _row(i))
    assert [r["run_id"] for r in table.read_table(tmp_path)] == ["r2", "r0", "r1"]
    assert table.rebuild(tmp_path) == [_row(0), _row(1), _row(2)] == table.read_table(tmp_path)


def test_torn_line_and_duplicates_are_repaired(tmp_path):
    table.append_row(tmp_path, tmp_path / "runs" / "r0", _row(0))
    path = tmp_path / table.TABLE
    path.write_text(path.read_text() + '{"run_id": "r1", "rec')  # killed mid-append
    table.append_row(tmp_path, tmp_path / "runs" / "r1", _row(1))
    assert table.read_table(tmp_path) == [_row(0), _row(1)]
    table.append_row(tmp_path, tmp_path / "runs" / "r1", _row(1))  # recorded twice: still one row
    assert table.read_table(tmp_path) == [_row(0), _row(1)]


def test_row_file_without_table_line_is_recovered(tmp_path):
    table.write_row(tmp_path / "runs" / "r3", _row(3))  # killed before the append
    (tmp_path / "runs" / "r4").mkdir()  # an unfinished run: no row
    assert table.rebuild(tmp_path) == [_row(3)]


def test_forget_drops_a_row(tmp_path):
    for i in range(2):
        table.append_row(tmp_path, tmp_path / "runs" / f"r{i}", _row(i, "failed"))
    table.forget(tmp_path, tmp_path / "runs" / "r0")
    assert table.read_table(tmp_path) == [_row(1, "failed")] and not (tmp_path / "runs" / "r0" / "row.json").exists()


def test_csv_round_trips_through_the_fits_reader(tmp_path):
    rows = [_row(0), _row(1) | {"block": 32}]
    table.write_csv(rows, tmp_path / "runs.csv")
    back = read_rows(tmp_path / "runs.csv")
    assert back[1]["block"] == 32.0 and back[0]["block"] is None and back[0]["error"] is None
    assert back[0]["n_params"] == 10.0 and list(back[0]) == list(rows[0]) + ["block"]


def test_write_atomic_leaves_no_temp_file(tmp_path):
    table.write_atomic(tmp_path / "a.json", json.dumps({"x": 1}))
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
