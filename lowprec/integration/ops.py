"""Quantized matmul callables for sites, and qwix-style interception of raw matmuls.

Layers get a QuantDot / QuantEinsum (hashable, so they live in NNX graphdefs and linen fields)
that reads the step key at call time. Raw calls are intercepted: while `intercepting()` is active
(reference-counted, under a lock) jax.lax.dot_general, jax.numpy.einsum and jax.numpy.matmul are
dispatchers that consult a per-context frame (a contextvar, so other threads and unframed code
see the originals). A module enters `frame(site)` around its own __call__; its children enter
their own frame (or `frame(None)`), so nothing is quantized twice, and a quantized GEMM runs with
the frame cleared so the gemm layer's own lax.dot_general calls pass through untouched.
Not intercepted: the `@` operator, jnp.dot, and calls that bound the functions before patching.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import threading

import jax
import jax.numpy as jnp

from lowprec.gemm.dot_general import dot_general
from lowprec.integration.einsum import einsum_via_dot_general
from lowprec.integration.keys import layer_key, shared_amax
from lowprec.integration.rules import Site

ORIGINALS = {"dot_general": jax.lax.dot_general, "einsum": jnp.einsum, "matmul": jnp.matmul}
_FRAME: contextvars.ContextVar[Site | None] = contextvars.ContextVar("lowprec_frame", default=None)
_CAPTURE: contextvars.ContextVar = contextvars.ContextVar("lowprec_capture", default=None)


def site_dot_general(site: Site, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                     out_sharding=None, *, gemm=None):
    """One quantized GEMM of `site` (the single path every quantized matmul takes).

    gemm(lhs, rhs, dimension_numbers, precision, preferred_element_type) replaces the recipe's
    stateless dot_general (delayed scaling passes one bound to its amax state). Where the recipe
    scales lhs by its own amax, that amax comes from the step's scope (`shared_amax`): layers reading
    one input share one reduction and one cast, also in programs over several devices."""
    key = None if gemm is not None else layer_key(site.path, site.recipe.needs_key, site.recipe.name)
    token = _FRAME.set(None)
    try:
        if gemm is None:
            amax = shared_amax(lhs) if site.recipe.takes_lhs_amax else None
            out = dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type, recipe=site.recipe,
                              key=key, lhs_amax=amax)
        else:
            out = gemm(lhs, rhs, dimension_numbers, precision, preferred_element_type)
        capture = _CAPTURE.get()
        if capture is not None:
            out = capture.record(site, lhs, rhs, dimension_numbers, out, key)
    finally:
        _FRAME.reset(token)
    return out if out_sharding is None else jax.lax.with_sharding_constraint(out, out_sharding)


def site_einsum(site: Site, subscripts, *operands, **kwargs):
    """jnp.einsum with its contraction quantized as `site` says (two operands; one passes through)."""
    if len(operands) == 1:
        return ORIGINALS["einsum"](subscripts, *operands, **kwargs)
    if len(operands) != 2:
        raise ValueError(f"einsum at {site.path!r}: quantized einsums take two operands, got {len(operands)}; "
                         "split the contraction into pairwise einsums")
    return einsum_via_dot_general(functools.partial(site_dot_general, site), subscripts, *operands, **kwargs)


@dataclasses.dataclass(frozen=True)
class QuantDot:
    """jax.lax.dot_general's signature, quantized as `site` says (a layer's dot_general)."""

    site: Site

    def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
        return site_dot_general(self.site, lhs, rhs, dimension_numbers, precision, preferred_element_type, out_sharding)


@dataclasses.dataclass(frozen=True)
class QuantEinsum:
    """jnp.einsum's signature, every pairwise contraction quantized as `site` says (an einsum_op)."""

    site: Site

    def __call__(self, subscripts, *operands, **kwargs):
        return site_einsum(self.site, subscripts, *operands, **kwargs)


def _matmul_subscripts(a_ndim: int, b_ndim: int) -> str:
    """jnp.matmul as an einsum: broadcast leading dims, 1-D operands promoted and squeezed."""
    if a_ndim == 0 or b_ndim == 0:
        raise ValueError("matmul: operands must have rank >= 1")
    a = "..." + ("i" if a_ndim > 1 else "") + "j"
    b = "..." + "j" + ("k" if b_ndim > 1 else "")
    out = "..." + ("i" if a_ndim > 1 else "") + ("k" if b_ndim > 1 else "")
    return f"{a},{b}->{out}"


def _active(op: str) -> Site | None:
    site = _FRAME.get()
    return site if site is not None and op in site.ops else None


def _dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    site = _active("dot_general")
    if site is None:
        return ORIGINALS["dot_general"](lhs, rhs, dimension_numbers, precision, preferred_element_type, **kwargs)
    return site_dot_general(site, lhs, rhs, dimension_numbers, precision, preferred_element_type, **kwargs)


def _einsum(subscripts, *operands, **kwargs):
    site = _active("einsum")
    if site is None:
        return ORIGINALS["einsum"](subscripts, *operands, **kwargs)
    return site_einsum(site, subscripts, *operands, **kwargs)


def _matmul(a, b, **kwargs):
    site = _active("dot_general")
    if site is None:
        return ORIGINALS["matmul"](a, b, **kwargs)
    a, b = jnp.asarray(a), jnp.asarray(b)
    return site_einsum(site, _matmul_subscripts(a.ndim, b.ndim), a, b, **kwargs)


_LOCK = threading.Lock()
_DEPTH = [0]  # contexts currently intercepting, across threads


def _set(dot_general, einsum, matmul) -> None:
    jax.lax.dot_general, jnp.einsum, jnp.matmul = dot_general, einsum, matmul


@contextlib.contextmanager
def intercepting():
    """Install the dispatchers for the duration (reference-counted; originals restored at zero)."""
    with _LOCK:
        if _DEPTH[0] == 0:
            _set(_dot_general, _einsum, _matmul)
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                _set(ORIGINALS["dot_general"], ORIGINALS["einsum"], ORIGINALS["matmul"])


@contextlib.contextmanager
def frame(site: Site | None):
    """Quantize the raw matmuls made directly inside the block as `site` says (None: none of them)."""
    token = _FRAME.set(site if site is not None and site.quantized else None)
    try:
        with intercepting():
            yield
    finally:
        _FRAME.reset(token)


@contextlib.contextmanager
def capturing(capture):
    """Route every quantized GEMM's operands through `capture.record` (see diagnostics)."""
    token = _CAPTURE.set(capture)
    try:
        yield
    finally:
        _CAPTURE.reset(token)


@dataclasses.dataclass(frozen=True)
class Framed:
    """A function (e.g. MultiHeadAttention.attention_fn) run inside `frame(site)`."""

    fn: object
    site: Site | None

    def __call__(self, *args, **kwargs):
        with frame(self.site):
            return self.fn(*args, **kwargs)
