"""The step key for stochastic rounding and random Hadamard signs: `with lowprec.quant_key(key):`.

Every quantized layer draws from its own stream: fold_in(step_key, layer id) with the layer id
zlib.crc32 of its path (or a per-layer id drawn at construction for lowprec.nnx layers), then
fold_in(·, n) for the layer's n-th GEMM inside the scope (weight-shared layers, several raw
matmuls in one module); the gemm layer further folds in the GEMM role and operand. So two layers,
two GEMMs of one layer, and two steps never share draws. Under jit, enter the scope inside the
jitted function with the key as a traced argument.

The scope also remembers each input's amax (`shared_amax`), so layers that read one input share it.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import zlib

import jax
import jax.numpy as jnp
from jax.extend.core import get_opaque_trace_state

from lowprec.numerics.quantize import tensor_amax


@dataclasses.dataclass
class _Scope:
    key: jax.Array
    draws: dict  # layer id (int or traced) -> GEMMs drawn so far in this scope
    amaxes: dict = dataclasses.field(default_factory=dict)  # id(array) -> (array, its trace, its amax)


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("lowprec_quant_key", default=None)
_IDENT: contextvars.ContextVar[object] = contextvars.ContextVar("lowprec_layer_ident", default=None)


def _check_key(key) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return key
    raise ValueError(f"quant_key needs one jax.random key (jax.random.key(seed) or PRNGKey), got "
                     f"{type(key).__name__} {getattr(key, 'dtype', '')}{getattr(key, 'shape', '')}")


@contextlib.contextmanager
def quant_key(key: jax.Array):
    """Provide `key` to every quantized layer that runs inside the block (nestable; innermost wins)."""
    token = _SCOPE.set(_Scope(key=_check_key(key), draws={}))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def path_id(path: str) -> int:
    """The stable 32-bit id of a layer path (zlib.crc32 of its UTF-8 bytes)."""
    return zlib.crc32(path.encode())


def derive_key(step_key: jax.Array, ident, n: int = 0) -> jax.Array:
    """The key of a layer's n-th GEMM in a step: fold_in(fold_in(step_key, ident), n)."""
    return jax.random.fold_in(jax.random.fold_in(step_key, ident), n)


@contextlib.contextmanager
def layer_ident(ident):
    """Run a layer with `ident` (e.g. a traced uint32 drawn at construction) as its stream id."""
    token = _IDENT.set(ident)
    try:
        yield
    finally:
        _IDENT.reset(token)


def layer_key(path: str, needs_key: bool, recipe_name: str):
    """The key for the next GEMM of the layer at `path`, or None when its recipe draws nothing."""
    if not needs_key:
        return None
    scope = _SCOPE.get()
    if scope is None:
        raise ValueError(f"layer {path or '(unnamed)'!r} uses recipe {recipe_name!r}, which needs random draws "
                         "(stochastic rounding or random Hadamard signs): wrap the call in "
                         "`with lowprec.quant_key(key):`")
    override = _IDENT.get()
    ident = path_id(path) if override is None else override
    n = count_call(path if override is None else id(override))
    return derive_key(scope.key, ident, n)


def count_call(slot) -> int | None:
    """How often `slot` was counted before in the active quant_key scope (counting this call);
    None outside a scope."""
    scope = _SCOPE.get()
    if scope is None:
        return None
    n = scope.draws.get(slot, 0)
    scope.draws[slot] = n + 1
    return n


def shared_amax(x: jax.Array) -> jax.Array:
    """tensor_amax(x), taken once per array in the active quant_key scope (the same object in the same
    JAX trace), so the layers that read one input (q/k/v, gate/up) share one reduction; outside a
    scope, taken at each call. A statistic for scaling: no gradient flows through it (an autodiff
    path through the max would add a pass over x, and zeros that reorder x's gradient sum)."""
    scope = _SCOPE.get()
    if scope is None:
        return tensor_amax(jax.lax.stop_gradient(x))
    trace = get_opaque_trace_state(convention="lowprec")
    seen = scope.amaxes.get(id(x))
    if seen is not None and seen[0] is x and seen[1] == trace:
        return seen[2]
    amax = tensor_amax(jax.lax.stop_gradient(x))
    scope.amaxes[id(x)] = (x, trace, amax)
    return amax
