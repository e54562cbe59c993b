"""Split an NNX model once into a static definition and flat `{"a/b/c": array}` dicts.

Flat string-keyed dicts of plain arrays are what the rest of the train layer handles: optax,
sharding rules (by path), Orbax (no integer dict keys, which come back as strings; flax #4308)
and checkpoints free of NNX Variable objects. Parameters (nnx.Param) get gradients; every other
variable (e.g. amax histories of delayed scaling) is carried through the step as `other`, and
the GradAmaxHistory ones among them are differentiated too: their gradient is their next value.
"""
from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from lowprec.integration.delayed import GradAmaxHistory

Flat = dict[str, jax.Array]


def path_key(path: tuple) -> str:
    return "/".join(map(str, path))


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """Static part of a split model: the graph and, per flat key, its path and an abstract Variable."""

    graphdef: nnx.GraphDef
    params: tuple[tuple[str, tuple, nnx.Variable], ...]
    other: tuple[tuple[str, tuple, nnx.Variable], ...]

    @property
    def grad_histories(self) -> tuple[str, ...]:
        """Keys of `other` whose next value arrives as their gradient (delayed scaling's amax_g)."""
        return tuple(key for key, _, var in self.other if isinstance(var, GradAmaxHistory))

    def split_other(self, other: Flat) -> tuple[Flat, Flat]:
        """(grad histories, the rest) of `other`."""
        keys = set(self.grad_histories)
        return {k: v for k, v in other.items() if k in keys}, {k: v for k, v in other.items() if k not in keys}

    def merge(self, params: Flat, other: Flat) -> nnx.Module:
        """A model whose variables hold these arrays (inside or outside jit)."""
        def state(entries, flat):
            return nnx.from_flat_state([(path, var.replace(flat[key])) for key, path, var in entries])

        return nnx.merge(self.graphdef, state(self.params, params), state(self.other, other))


def _entries(state: nnx.State) -> tuple[tuple[tuple[str, tuple, nnx.Variable], ...], Flat]:
    entries, flat = [], {}
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        entries.append((path_key(path), path, var.replace(jax.ShapeDtypeStruct(value.shape, value.dtype))))
        flat[path_key(path)] = value
    return tuple(entries), flat


def split_model(model: nnx.Module) -> tuple[ModelDef, Flat, Flat]:
    """(definition, params, other) of `model`."""
    graphdef, params, other = nnx.split(model, nnx.Param, ...)
    p_entries, p_flat = _entries(params)
    o_entries, o_flat = _entries(other)
    return ModelDef(graphdef, p_entries, o_entries), p_flat, o_flat


def other_state(model: nnx.Module) -> Flat:
    """The non-Param variables of a (merged, possibly updated) model as a flat dict."""
    return {path_key(p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param)))}
