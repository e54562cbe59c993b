"""Orbax checkpoints of a run: model state, optimizer state and JSON metadata, one step each.

A step holds a Composite of `state` ({"state": {"params", "other"}, "opt": optimizer state}, via
StandardSave) and `meta` (step, resolved config, the grain data-iterator state; JsonSave). No PRNG
keys are stored: they derive from (seed, step). The batch of step t is a pure function of
(data.seed, t), so the iterator state is a cross-check on resume rather than a seek.
Restore fills an abstract tree (shapes, dtypes, shardings).
Saves are synchronous, so a donated buffer is never read after the next step reuses it.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def manager(ckpt_dir: str | Path, keep_last: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep_last, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(Path(ckpt_dir).absolute(), options=options)


def save(mgr: ocp.CheckpointManager, step: int, tree: dict, meta: dict) -> None:
    """Save `tree` (arrays) and `meta` (JSON-able) as checkpoint `step`."""
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
             force=True)
    mgr.wait_until_finished()


def abstract(tree, shardings) -> dict:
    """ShapeDtypeStructs with shardings, the target for restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def read_meta(mgr: ocp.CheckpointManager, step: int) -> dict:
    """The JSON metadata of checkpoint `step` (cheap: no arrays are read)."""
    return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(mgr: ocp.CheckpointManager, step: int, abstract_tree) -> tuple:
    """(state, opt_state) of checkpoint `step`, laid out like `abstract_tree` = {"state", "opt"}."""
    out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_tree)))["state"]
    return out["state"], out["opt"]


def latest_params(ckpt_dir: str | Path) -> dict:
    """The parameters (flat dict of host arrays) of the latest checkpoint in `ckpt_dir`."""
    options = ocp.CheckpointManagerOptions(create=False, read_only=True)
    mgr = ocp.CheckpointManager(Path(ckpt_dir).absolute(), options=options)
    step = mgr.latest_step()
    if step is None:
        raise ValueError(f"{ckpt_dir} has no checkpoint")
    out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.device_get(out["state"]["state"]["params"])
