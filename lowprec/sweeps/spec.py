"""Sweep files: strict parsing of a sweep YAML into a frozen `Sweep`.

A sweep file holds `name`, `base` (one training config YAML or a list, resolved relative to the
sweep file, then to the repository root), optional `overrides` (`section.key=value` strings applied
to the base), optional `out` (default runs/sweeps/<name>), and exactly one layout:

grid:       model | width + depth (+ head_dim), tokens | tokens_per_param, recipe, seed, lr, batch_size
isoflop:    budgets (FLOPs), model | width + depth (+ head_dim), per_budget, ratio, recipe, seed, lr, batch_size

`lr` is a list of peak rates (each becomes part of the run id) or `auto` (lowprec.sweeps.plan.auto_lr);
`batch_size` is a number of sequences or `auto` (AUTO_BATCH_TOKENS per step). Every unknown key
raises ValueError naming it and the valid keys.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lowprec.typedconfig import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_KEYS = ("name", "base", "overrides", "out", "grid", "isoflop")
COMMON_AXES = ("model", "width", "depth", "head_dim", "recipe", "seed", "lr", "batch_size")
GRID_KEYS = (*COMMON_AXES, "tokens", "tokens_per_param")
ISOFLOP_KEYS = (*COMMON_AXES, "budgets", "per_budget", "ratio")
AUTO = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sweep:
    """A parsed sweep: the base config, the model and data axes, and the other axes.

    Model axis: `models` (preset names or model YAML paths) or `widths` x `depths` with
    n_heads = width / head_dim. Data axis: `tokens` (absolute D), `tokens_per_param` (D = r·N,
    N non-embedding), or `budgets` (isoflop: D = C / (6N) for every model, or for the
    `per_budget` models nearest in log N to N*(C) = sqrt(C / (6·ratio))).
    seeds / lrs / batch_size = None take the base config's train.seed / optim.lr / data.batch_size.
    """

    name: str
    base: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    out: str
    models: tuple[str, ...] = ()
    widths: tuple[int, ...] = ()
    depths: tuple[int, ...] = ()
    head_dim: int = 64
    tokens: tuple[int, ...] = ()
    tokens_per_param: tuple[float, ...] = ()
    budgets: tuple[float, ...] = ()
    per_budget: int | None = None
    ratio: float = 20.0
    recipes: tuple[str, ...] = ("bf16",)
    seeds: tuple[int, ...] | None = None
    lrs: tuple[float, ...] | str | None = None
    batch_size: int | str | None = None

    @property
    def layout(self) -> str:
        return "isoflop" if self.budgets else "grid"


def _check_keys(mapping: dict, valid: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in valid:
            raise ValueError(f"unknown key {where}{key!s} in the sweep file; valid keys: "
                             f"{', '.join(where + v for v in valid)}")


def _list(value: Any, key: str, kind: type, *, positive: bool = True) -> tuple:
    """A non-empty list (a scalar counts as a one-item list) of numbers or strings of type `kind`."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"sweep key {key} must not be empty")
    out = []
    for item in items:
        ok = isinstance(item, kind) and not isinstance(item, bool)
        if kind is float and isinstance(item, int) and not isinstance(item, bool):
            item, ok = float(item), True
        if not ok:
            raise ValueError(f"sweep key {key}: expected {kind.__name__} values, got {type(item).__name__} {item!r}")
        if positive and kind is not str and not item > 0:
            raise ValueError(f"sweep key {key}: values must be > 0, got {item!r}")
        out.append(item)
    if len(set(out)) != len(out):
        raise ValueError(f"sweep key {key} repeats a value: {out}")
    return tuple(out)


def _int_tokens(values: tuple[float, ...], key: str) -> tuple[int, ...]:
    if any(v != int(v) for v in values):
        raise ValueError(f"sweep key {key} must hold whole token counts, got {list(values)}")
    return tuple(int(v) for v in values)


def _resolve_base(value: Any, sweep_dir: Path) -> tuple[str, ...]:
    paths = _list(value, "base", str)
    resolved = []
    for text in paths:
        candidates = [Path(text)] if Path(text).is_absolute() else [sweep_dir / text, REPO_ROOT / text]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ValueError(f"sweep key base: config file {text!r} not found (looked in "
                             f"{', '.join(str(p) for p in candidates)})")
        resolved.append(str(found))
    return tuple(resolved)


def _axes(layout: dict, where: str) -> dict:
    """Sweep fields shared by both layouts: model axis, recipe, seed, lr, batch_size."""
    fields: dict[str, Any] = {}
    has_model, has_shape = "model" in layout, ("width" in layout or "depth" in layout)
    if has_model == has_shape:
        raise ValueError(f"{where}: give either model (preset names or model YAML paths) or width and depth")
    if has_model:
        fields["models"] = _list(layout["model"], f"{where}model", str)
    else:
        if not ("width" in layout and "depth" in layout):
            raise ValueError(f"{where}: width and depth must be given together")
        fields["widths"] = _list(layout["width"], f"{where}width", int)
        fields["depths"] = _list(layout["depth"], f"{where}depth", int)
        if "head_dim" in layout:
            (fields["head_dim"],) = _list(layout["head_dim"], f"{where}head_dim", int)
    if "head_dim" in layout and has_model:
        raise ValueError(f"{where}head_dim applies to width/depth models only, not to model presets")
    if "recipe" in layout:
        fields["recipes"] = _list(layout["recipe"], f"{where}recipe", str)
    if "seed" in layout:
        fields["seeds"] = _list(layout["seed"], f"{where}seed", int, positive=False)
        if min(fields["seeds"]) < 0:
            raise ValueError(f"{where}seed values must be >= 0, got {list(fields['seeds'])}")
    if "lr" in layout:
        fields["lrs"] = AUTO if layout["lr"] == AUTO else _list(layout["lr"], f"{where}lr", float)
    if "batch_size" in layout:
        value = layout["batch_size"]
        if value != AUTO and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{where}batch_size must be a positive number of sequences or 'auto', got {value!r}")
        fields["batch_size"] = value
    return fields


def parse_sweep(data: Any, *, sweep_dir: str | Path = ".") -> Sweep:
    """Sweep from the mapping of a sweep file; relative `base` paths resolve against `sweep_dir`."""
    if not isinstance(data, dict):
        raise ValueError(f"a sweep file must hold a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(data, TOP_KEYS, "")
    for key in ("name", "base"):
        if key not in data:
            raise ValueError(f"the sweep file needs key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"sweep key name must be a non-empty string without '/' or spaces, got {name!r}")
    if ("grid" in data) == ("isoflop" in data):
        raise ValueError("the sweep file needs exactly one layout: grid or isoflop")
    overrides = _list(data["overrides"], "overrides", str) if data.get("overrides") is not None else ()
    out = data.get("out", f"runs/sweeps/{name}")
    if not isinstance(out, str) or not out:
        raise ValueError(f"sweep key out must be a directory path, got {out!r}")
    fields: dict[str, Any] = {"name": name, "base": _resolve_base(data["base"], Path(sweep_dir)),
                              "overrides": overrides, "out": out}
    if "grid" in data:
        grid = data["grid"]
        if not isinstance(grid, dict):
            raise ValueError(f"sweep key grid must be a mapping of axes ({', '.join(GRID_KEYS)})")
        _check_keys(grid, GRID_KEYS, "grid.")
        fields |= _axes(grid, "grid.")
        if ("tokens" in grid) == ("tokens_per_param" in grid):
            raise ValueError("grid: give exactly one of tokens (absolute D) and tokens_per_param (D = r·N)")
        if "tokens" in grid:
            fields["tokens"] = _int_tokens(_list(grid["tokens"], "grid.tokens", float), "grid.tokens")
        else:
            fields["tokens_per_param"] = _list(grid["tokens_per_param"], "grid.tokens_per_param", float)
    else:
        iso = data["isoflop"]
        if not isinstance(iso, dict):
            raise ValueError(f"sweep key isoflop must be a mapping ({', '.join(ISOFLOP_KEYS)})")
        _check_keys(iso, ISOFLOP_KEYS, "isoflop.")
        if "budgets" not in iso:
            raise ValueError("isoflop needs budgets (training FLOPs, C = 6·N·D)")
        fields |= _axes(iso, "isoflop.")
        fields["budgets"] = _list(iso["budgets"], "isoflop.budgets", float)
        if "per_budget" in iso:
            (fields["per_budget"],) = _list(iso["per_budget"], "isoflop.per_budget", int)
        if "ratio" in iso:
            (fields["ratio"],) = _list(iso["ratio"], "isoflop.ratio", float)
    return Sweep(**fields)


def load_sweep(path: str | Path) -> Sweep:
    """Sweep from a sweep YAML file (duplicate keys and unknown keys raise ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist")
    return parse_sweep(load_yaml(path.read_text()), sweep_dir=path.resolve().parent)
