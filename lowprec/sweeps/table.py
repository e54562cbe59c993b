"""The sweep's runs table, kept consistent with the run directories through crashes and shards.

Each finished or failed run first writes `<out>/runs/<run_id>/row.json` (atomically: temp file,
fsync, rename); only then is the row appended to `<out>/runs.jsonl` (one line, flush, fsync).
The row files are the source of truth: `rebuild` rewrites runs.jsonl from them (sorted by run_id,
atomically), so a kill between the two writes, or in the middle of an append, loses nothing and
duplicates nothing. Table updates hold an exclusive flock on `<out>/.runs.lock`, so several
sweep processes (one per GPU, `--shard i/n`) can share one sweep directory.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
from pathlib import Path

TABLE = "runs.jsonl"
CSV_TABLE = "runs.csv"
ROW_FILE = "row.json"
RUNS_DIR = "runs"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(out: Path):
    """Exclusive lock on the sweep directory's table (blocks while another process holds it)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".runs.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_row(run_dir: Path) -> dict | None:
    path = run_dir / ROW_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_row(run_dir: Path, row: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / ROW_FILE, json.dumps(row) + "\n")


def row_files(out: Path) -> list[dict]:
    """Every run directory's row, sorted by run_id."""
    runs = out / RUNS_DIR
    rows = [read_row(d) for d in sorted(runs.iterdir())] if runs.is_dir() else []
    return [r for r in rows if r is not None]


def _dump(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rebuild(out: Path) -> list[dict]:
    """Rewrite runs.jsonl from the row files; returns the rows."""
    with locked(out):
        rows = row_files(out)
        write_atomic(out / TABLE, _dump(rows))
    return rows


def read_table(out: Path) -> list[dict]:
    path = out / TABLE
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def append_row(out: Path, run_dir: Path, row: dict) -> None:
    """Record a run: its row file, then one fsynced line in runs.jsonl (a rebuild when the table is
    torn or already holds the run)."""
    write_row(run_dir, row)
    with locked(out):
        path = out / TABLE
        text = path.read_text() if path.is_file() else ""
        try:
            ids = {json.loads(line)["run_id"] for line in text.splitlines() if line}
            clean = text == "" or text.endswith("\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            ids, clean = set(), False
        if clean and row["run_id"] not in ids:
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        else:
            write_atomic(path, _dump(row_files(out)))


def forget(out: Path, run_dir: Path) -> None:
    """Drop a run's row (a failed run about to be retried) from its directory and the table."""
    with locked(out):
        (run_dir / ROW_FILE).unlink(missing_ok=True)
        write_atomic(out / TABLE, _dump(row_files(out)))


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as CSV: the union of their columns in order of first appearance; None is empty."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows)
    os.replace(tmp, path)
