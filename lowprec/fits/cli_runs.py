"""`lowprec runs RUNS.jsonl [--csv OUT]`: the runs table grouped by recipe, in fixed-width columns."""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from lowprec.fits.table import column_names, read_rows


def _first(row: Mapping[str, Any], *names: str) -> Any:
    return next((row[n] for n in names if row.get(n) is not None), None)


def _flops(row: Mapping[str, Any]) -> Any:
    value = _first(row, "flops_6ND", "flops")
    if value is None and isinstance(row.get("n_params"), (int, float)) and isinstance(row.get("tokens"), (int, float)):
        return 6.0 * row["n_params"] * row["tokens"]
    return value


# (header, width, value) for every printed column; flops falls back to 6*n_params*tokens.
COLUMNS: tuple[tuple[str, int, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("run_id", 28, lambda r: r.get("run_id")),
    ("n_params", 10, lambda r: r.get("n_params")),
    ("tokens", 10, lambda r: r.get("tokens")),
    ("flops", 10, _flops),
    ("final_val_loss", 14, lambda r: r.get("final_val_loss")),
    ("bpb", 7, lambda r: _first(r, "final_val_bpb", "bpb")),
    ("status", 9, lambda r: r.get("status", "ok")),
)


def _cell(value: Any, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.5g}" if abs(value) < 1e5 else f"{value:.3e}"
    else:
        text = str(value)
    return text[:width].rjust(width) if isinstance(value, (int, float)) else text[:width].ljust(width)


def format_runs(rows: list[Mapping[str, Any]]) -> str:
    """Fixed-width text, one block per recipe (recipes in order of first appearance)."""
    recipes = list(dict.fromkeys(str(r.get("recipe")) for r in rows))
    header = " ".join(_cell(h, w) for h, w, _ in COLUMNS)
    lines = []
    for recipe in recipes:
        group = [r for r in rows if str(r.get("recipe")) == recipe]
        ok = sum(1 for r in group if r.get("status", "ok") == "ok")
        lines += [f"== recipe {recipe}: {len(group)} runs, {ok} ok ==", header, "-" * len(header)]
        lines += [" ".join(_cell(f(r), w) for _, w, f in COLUMNS) for r in group]
        lines.append("")
    return "\n".join(lines)


def write_csv(rows: list[Mapping[str, Any]], path: Path) -> None:
    """All columns of all rows (nested values as JSON-like text)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=column_names(rows))
        writer.writeheader()
        writer.writerows(rows)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, help="runs table (.jsonl or .csv)")
    parser.add_argument("--csv", type=Path, metavar="OUT", help="also export every column to this CSV file")


def main(args: argparse.Namespace) -> int:
    rows = read_rows(args.runs)
    print(format_runs(rows))
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    return 0
