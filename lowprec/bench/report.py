"""Recording and printing benchmark results: JSON rewritten after every row, fixed-width tables.

Every benchmark case is isolated: `guarded` turns an exception into an error row, so one failing
case never stops the others, and a run killed by a time limit still leaves every finished row
on disk.
"""
from __future__ import annotations

import json
import math
import traceback
from pathlib import Path
from typing import Callable, Sequence

NOT_INSTALLED = "not installed"


class Recorder:
    """Collects rows; with a path, rewrites {"meta": ..., "rows": [...]} as JSON after each row."""

    def __init__(self, path: str | Path | None, meta: dict):
        self.path = None if path is None else Path(path)
        self.meta = dict(meta)
        self.rows: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write()

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        if self.path is not None:
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1, default=_jsonable) + "\n")
        tmp.replace(self.path)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def error_text(exc: BaseException) -> str:
    """One line: 'not installed' for a missing package, else the type, message and raising frame."""
    if isinstance(exc, ModuleNotFoundError):
        return f"{NOT_INSTALLED} ({exc.name})"
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" [{Path(frame.filename).name}:{frame.lineno}]" if frame else ""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:400]}{where}"


def guarded(fields: dict, work: Callable[[], dict]) -> dict:
    """`fields` merged with work()'s result, or with {"error": ...} when it raises."""
    try:
        return {**fields, **work()}
    except Exception as exc:  # noqa: BLE001 -- a benchmark case must not stop the others
        return {**fields, "error": error_text(exc)}


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, fmt)
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table; columns are (key, header, float format). Error rows show the error."""
    lines = []
    widths = []
    cells = []
    for r in rows:
        if "error" in r:
            cells.append(None)
            continue
        cells.append([_cell(r.get(k), f) for k, _, f in columns])
    for i, (_, head, _) in enumerate(columns):
        widths.append(max([len(head)] + [len(c[i]) for c in cells if c is not None]))
    lines.append("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for r, c in zip(rows, cells):
        if c is None:
            lead = [_cell(r.get(k), f) for k, _, f in columns if k in r and k != "error"]
            lines.append("  ".join(lead) + "  ERROR " + r["error"])
        else:
            lines.append("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    return "\n".join(lines)
