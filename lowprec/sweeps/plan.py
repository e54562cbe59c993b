"""Expand a Sweep into its runs: one resolved training Config and a deterministic run id per point.

Per-size defaults (training.md §8-9), used when an axis says `auto`:
- lr: `auto_lr(N)`, the Quartet/QuEST parity table (30m 1.2e-3, 50m 1.2e-3, 100m 6e-4, 200m 3e-4)
  interpolated linearly in (log N, log lr) between the presets' non-embedding N, and held at the
  end values outside [N(30m), N(200m)].
- batch_size: AUTO_BATCH_TOKENS (262,144 tokens, the parity table's 512 x 512) per step, i.e.
  max(1, 262144 // seq_len) sequences, the same for every N.
- warmup: the base config's schedule (default warmup_fraction 0.1: 10% of each run's steps).
Steps = round(D / (batch_size · seq_len)), at least 1; the run's D is then steps · batch · seq.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from lowprec import recipes
from lowprec.models import load_model_config, param_counts
from lowprec.sweeps.spec import AUTO, Sweep
from lowprec.train.config import ADDED_KEYS, Config, default_tree, load_config, parse_override
from lowprec.typedconfig import to_dict

AUTO_BATCH_TOKENS = 262_144
LR_TABLE = (("30m", 1.2e-3), ("50m", 1.2e-3), ("100m", 6e-4), ("200m", 3e-4))
# config keys left out of the config hash: where the run lives and how often it logs
UNHASHED = ("train.run_dir", "train.stop_at_step", "train.log_every", "train.eval_every", "train.ckpt_every",
            "train.keep_last", "train.tensorboard")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """One point of a sweep, with the full training config that realizes it."""

    run_id: str
    model: str
    recipe: str
    seed: int
    lr: float
    batch_size: int
    steps: int
    tokens: int  # D actually trained: steps · batch_size · seq_len
    n_params: int  # non-embedding N
    budget: float | None  # isoflop C, else None
    config: Config


@functools.cache
def _lr_points() -> tuple[tuple[float, ...], tuple[float, ...]]:
    n = [math.log(param_counts(load_model_config(name))["non_embedding"]) for name, _ in LR_TABLE]
    return tuple(n), tuple(math.log(lr) for _, lr in LR_TABLE)


def auto_lr(n_params: float) -> float:
    """Peak LR for non-embedding size N from the parity table (see the module docstring)."""
    if not n_params > 0:
        raise ValueError(f"auto_lr needs N > 0, got {n_params}")
    xs, ys = _lr_points()
    return math.exp(float(np.interp(math.log(n_params), xs, ys)))


def isoflop_models(budget: float, n_params: dict[str, int], per_budget: int | None, ratio: float) -> list[str]:
    """The models trained at `budget`: all, or the `per_budget` nearest in log N to sqrt(C / (6·ratio))."""
    if per_budget is None:
        return list(n_params)
    target = math.log(math.sqrt(budget / (6 * ratio)))
    ranked = sorted(n_params, key=lambda m: abs(math.log(n_params[m]) - target))  # stable: file order on ties
    chosen = set(ranked[:per_budget])
    return [m for m in n_params if m in chosen]


def config_hash(cfg: Config) -> str:
    """sha256 (16 hex digits) of the resolved config, without the UNHASHED keys, nor the ADDED_KEYS
    at their defaults (so that a config hashes as it did before those keys existed)."""
    tree, defaults = to_dict(cfg), default_tree()
    for dotted in UNHASHED + ADDED_KEYS:
        section, key = dotted.split(".")
        if dotted in UNHASHED or tree[section].get(key) == defaults[section][key]:
            tree[section].pop(key, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def _model_choices(sweep: Sweep) -> dict[str, list[str]]:
    """label -> model overrides."""
    if sweep.models:
        return {Path(m).stem: [f"model={m}"] for m in sweep.models}
    choices = {}
    for depth in sweep.depths:
        for width in sweep.widths:
            if width % sweep.head_dim:
                raise ValueError(f"sweep width {width} is not a multiple of head_dim {sweep.head_dim}")
            choices[f"d{width}L{depth}"] = [f"model.d_model={width}", f"model.n_layers={depth}",
                                            f"model.n_heads={width // sweep.head_dim}"]
    return choices


def _axis_keys(sweep: Sweep) -> dict[str, str]:
    """Config keys the sweep sets itself -> the axis that sets them."""
    keys = {"precision.recipe": "recipe", "train.steps": "tokens", "train.run_dir": "out",
            "train.stop_at_step": "(the sweep runs every run to its end)"}
    keys |= {"model": "model"} if sweep.models else {f"model.{k}": "width/depth" for k in ("d_model", "n_layers", "n_heads")}
    keys |= {"train.seed": "seed"} if sweep.seeds is not None else {}
    keys |= {"optim.lr": "lr"} if sweep.lrs is not None else {}
    keys |= {"data.batch_size": "batch_size"} if sweep.batch_size is not None else {}
    return keys


def _check_overrides(sweep: Sweep, overrides: tuple[str, ...]) -> None:
    axis = _axis_keys(sweep)
    for text in overrides:
        key, _ = parse_override(text)
        if key in axis:
            raise ValueError(f"override {text!r} sets {key}, which the sweep sets per run (axis {axis[key]}); "
                             f"remove it or change the sweep file")


def plan_runs(sweep: Sweep, overrides: tuple[str, ...] | list[str] = ()) -> list[PlannedRun]:
    """Every run of `sweep`, in order model, data point, recipe, seed, lr; `overrides` refine the base."""
    extra = (*sweep.overrides, *overrides)
    _check_overrides(sweep, extra)
    for recipe in sweep.recipes:
        recipes.get(recipe)  # unknown names raise, listing the valid ones
    models = {}
    for label, model_overrides in _model_choices(sweep).items():
        cfg = load_config(sweep.base, [*model_overrides, *extra])
        if cfg.train.stop_at_step is not None:
            raise ValueError("the base config sets train.stop_at_step; a sweep runs every run to its end")
        models[label] = (model_overrides, cfg, param_counts(cfg.model)["non_embedding"])
    points = []  # (model, requested D, budget)
    if sweep.budgets:
        for budget in sweep.budgets:
            chosen = isoflop_models(budget, {m: v[2] for m, v in models.items()}, sweep.per_budget, sweep.ratio)
            points += [(m, budget / (6 * models[m][2]), budget) for m in chosen]
    else:
        for m, (_, _, n) in models.items():
            points += [(m, float(d), None) for d in sweep.tokens] + [(m, r * n, None) for r in sweep.tokens_per_param]
    runs = []
    for model, d_req, budget in points:
        model_overrides, cfg, n = models[model]
        batch = (max(1, AUTO_BATCH_TOKENS // cfg.model.seq_len) if sweep.batch_size == AUTO
                 else sweep.batch_size or cfg.data.batch_size)
        steps = max(1, round(d_req / (batch * cfg.model.seq_len)))
        tokens = steps * batch * cfg.model.seq_len
        lrs = (auto_lr(n),) if sweep.lrs == AUTO else sweep.lrs or (cfg.optim.lr,)
        for recipe in sweep.recipes:
            for seed in sweep.seeds if sweep.seeds is not None else (cfg.train.seed,):
                for lr in lrs:
                    run_id = f"{model}-{recipe}-D{tokens}-s{seed}" + (f"-lr{lr:g}" if isinstance(sweep.lrs, tuple) else "")
                    run_cfg = load_config(sweep.base, [
                        *model_overrides, *extra, f"precision.recipe={recipe}", f"train.seed={seed}",
                        f"train.steps={steps}", f"optim.lr={lr!r}", f"data.batch_size={batch}",
                        f"train.run_dir={Path(sweep.out) / 'runs' / run_id}"])
                    runs.append(PlannedRun(run_id=run_id, model=model, recipe=recipe, seed=seed, lr=lr,
                                           batch_size=batch, steps=steps, tokens=tokens, n_params=n, budget=budget,
                                           config=run_cfg))
    ids = [r.run_id for r in runs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"sweep {sweep.name}: several points round to the same run ({', '.join(repeated)}); "
                         f"token budgets must differ by at least one step of batch_size x seq_len tokens")
    return runs


def shard(runs: list[PlannedRun], index: int, count: int) -> list[PlannedRun]:
    """Every count-th run starting at index (0 <= index < count): one sweep process per device."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    return runs[index::count]
