"""Runs tables for fitting: read JSONL/CSV rows, keep the usable runs, list every exclusion.

A runs table has one row per training run. The fitter needs `recipe`, `n_params` (non-embedding
N), `tokens` (D) and a loss column (`final_val_loss` by default); any other column (bits_w,
bits_a, exp_bits, man_bits, block, status, ...) is carried along. Rows are never dropped
silently: a row whose `status` is not "ok", or whose required values are missing, non-finite or
non-positive, goes to `RunsTable.excluded` with the reason.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

REQUIRED = ("recipe", "n_params", "tokens")
DEFAULT_LOSS = "final_val_loss"


@dataclass(frozen=True, kw_only=True)
class Exclusion:
    """One run left out of a fit, and why."""

    row: int
    run_id: str | None
    recipe: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class RunsTable:
    """The usable runs (`rows`) plus every excluded run with its reason (`excluded`)."""

    rows: tuple[Mapping[str, Any], ...]
    excluded: tuple[Exclusion, ...]
    columns: tuple[str, ...]
    loss_column: str = DEFAULT_LOSS

    def __len__(self) -> int:
        return len(self.rows)

    def array(self, name: str) -> np.ndarray:
        """Column `name` as float64; a row without a numeric value gives NaN."""
        if name not in self.columns:
            raise ValueError(f"column {name!r} not in the runs table; present: {', '.join(self.columns)}")
        return np.array([_as_float(r.get(name)) for r in self.rows], dtype=np.float64)

    @property
    def recipes(self) -> tuple[str, ...]:
        """Recipe names in order of first appearance."""
        return tuple(dict.fromkeys(str(r["recipe"]) for r in self.rows))

    def select(self, recipe: str) -> RunsTable:
        """The runs of one recipe (exclusions are kept only for that recipe)."""
        if recipe not in self.recipes:
            raise ValueError(f"recipe {recipe!r} not in the runs table; present: {', '.join(self.recipes)}")
        return RunsTable(
            rows=tuple(r for r in self.rows if str(r["recipe"]) == recipe),
            excluded=tuple(e for e in self.excluded if e.recipe == recipe),
            columns=self.columns,
            loss_column=self.loss_column,
        )

    def data(self, features: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Arrays for a law: N, D, L plus the named feature columns."""
        out = {"N": self.array("n_params"), "D": self.array("tokens"), "L": self.array(self.loss_column)}
        for name in features:
            out[name] = self.array(name)
        return out


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _parse_csv_value(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Raw rows of a `.jsonl` or `.csv` file (CSV numbers parsed as float, empty cells as None)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: a JSONL row must be an object, got {type(row).__name__}")
            rows.append(row)
        return rows
    if suffix == ".csv":
        with path.open(newline="") as f:
            return [{k: _parse_csv_value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    raise ValueError(f"runs table {path}: suffix {suffix!r} not supported; choose from .jsonl, .csv")


def column_names(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Union of the rows' keys, in order of first appearance."""
    return tuple(dict.fromkeys(k for r in rows for k in r))


def from_rows(rows: Sequence[Mapping[str, Any]], *, loss_column: str = DEFAULT_LOSS) -> RunsTable:
    """Split rows into usable runs and explicit exclusions."""
    columns = column_names(rows)
    for name in (*REQUIRED, loss_column):
        if name not in columns:
            raise ValueError(f"runs table lacks required column {name!r}; present columns: {', '.join(columns)}")
    kept, excluded = [], []
    for i, row in enumerate(rows):
        reason = _exclusion_reason(row, loss_column)
        if reason is None:
            kept.append(row)
        else:
            rid, rec = row.get("run_id"), row.get("recipe")
            excluded.append(Exclusion(row=i, run_id=None if rid is None else str(rid),
                                      recipe=None if rec is None else str(rec), reason=reason))
    return RunsTable(rows=tuple(kept), excluded=tuple(excluded), columns=columns, loss_column=loss_column)


def _exclusion_reason(row: Mapping[str, Any], loss_column: str) -> str | None:
    status = row.get("status", "ok")
    if status != "ok":
        return f"status={status}"
    if row.get("recipe") in (None, ""):
        return "recipe missing"
    for name in ("n_params", "tokens", loss_column):
        value = _as_float(row.get(name))
        if not (math.isfinite(value) and value > 0):
            return f"{name}={row.get(name)!r} is not a finite positive number"
    return None


def load_runs(path: str | Path, *, loss_column: str = DEFAULT_LOSS) -> RunsTable:
    """Read a runs table file (JSONL or CSV) into usable runs plus exclusions."""
    return from_rows(read_rows(path), loss_column=loss_column)


def load_chinchilla_epoch_csv(path: str | Path, *, drop_highest: int = 5, recipe: str = "chinchilla") -> RunsTable:
    """Epoch AI's digitized Chinchilla points: N = Model Size, D = Training FLOP / (6N), loss.

    Epoch's analysis drops the `drop_highest` highest losses; they are listed as exclusions.
    """
    raw = read_rows(path)
    for name in ("Model Size", "Training FLOP", "loss"):
        if raw and name not in raw[0]:
            raise ValueError(f"{path}: column {name!r} missing; present columns: {', '.join(raw[0])}")
    rows = [
        {"run_id": f"epoch-{i}", "recipe": recipe, "n_params": float(r["Model Size"]),
         "tokens": float(r["Training FLOP"]) / (6.0 * float(r["Model Size"])),
         "flops": float(r["Training FLOP"]), "final_val_loss": float(r["loss"])}
        for i, r in enumerate(raw)
    ]
    order = np.argsort([-r["final_val_loss"] for r in rows], kind="stable")
    drop = set(int(i) for i in order[:drop_highest])
    table = from_rows([r for i, r in enumerate(rows) if i not in drop])
    excluded = tuple(
        Exclusion(row=i, run_id=rows[i]["run_id"], recipe=recipe,
                  reason=f"among the {drop_highest} highest losses (Epoch's rule)")
        for i in sorted(drop)
    )
    return RunsTable(rows=table.rows, excluded=excluded + table.excluded, columns=table.columns)
