"""Device mesh ("data", "fsdp") and the shardings of batches, parameters and optimizer state.

The batch is split over both axes (FSDP is also data parallel). Each parameter is split along
its largest dimension divisible by the fsdp size (replicated if none is); optimizer moments
follow their parameter. XLA inserts the collectives (jit with in/out shardings).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lowprec.train.config import MeshConfig

BATCH_AXES = ("data", "fsdp")


def make_mesh(cfg: MeshConfig, devices: list | None = None) -> Mesh:
    """Mesh over the first data·fsdp devices (data=-1: all devices left by fsdp)."""
    devices = jax.devices() if devices is None else devices
    n = len(devices)
    data = n // cfg.fsdp if cfg.data == -1 else cfg.data
    if data < 1 or data * cfg.fsdp > n or (cfg.data == -1 and n % cfg.fsdp):
        raise ValueError(f"mesh.data={cfg.data} x mesh.fsdp={cfg.fsdp} does not fit {n} device(s)")
    return Mesh(np.asarray(devices[: data * cfg.fsdp]).reshape(data, cfg.fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Shard the largest dim divisible by the fsdp size (the first such on ties) over "fsdp"."""
    size = mesh.shape["fsdp"]
    dims = [i for i, d in enumerate(shape) if size > 1 and d % size == 0]
    if not dims:
        return replicated(mesh)
    dim = max(dims, key=lambda i: (shape[i], -i))
    spec = [None] * len(shape)
    spec[dim] = "fsdp"
    return NamedSharding(mesh, P(*spec))


def tree_shardings(mesh: Mesh, tree, params: dict[str, jax.Array]):
    """Shardings for any pytree holding param-shaped leaves under param keys (optimizer state):
    a leaf whose key path contains a param name and whose shape matches it follows that param;
    everything else (step counts, scalars) is replicated."""

    def one(path, leaf):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        for name in reversed(names):
            if name in params and tuple(params[name].shape) == tuple(leaf.shape):
                return param_sharding(mesh, tuple(leaf.shape))
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)
