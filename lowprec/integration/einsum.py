"""A two-operand einsum expressed as one dot_general plus a transpose.

Quantized einsums go through this instead of jnp.einsum(_dot_general=...): jnp.einsum runs its
contractions inside an inner jit with the callable as a static argument, and a callable that
closes over the traced step key leaks that tracer under jit(grad(...)).
"""
from __future__ import annotations

import string

import jax
import jax.numpy as jnp

_SPARE = string.ascii_uppercase + string.ascii_lowercase


def _expand(terms: list[str], ndims: list[int]) -> tuple[list[str], str]:
    """Replace '...' with fresh letters (right-aligned across operands); also return those letters."""
    used = set("".join(terms))
    fresh = [c for c in _SPARE if c not in used]
    lengths = [nd - len(t.replace("...", "")) if "..." in t else 0 for t, nd in zip(terms, ndims)]
    width = max(lengths, default=0)
    ell = "".join(fresh[:width])
    return [t.replace("...", ell[width - n:]) for t, n in zip(terms, lengths)], ell


def parse(subscripts: str, a_ndim: int, b_ndim: int) -> tuple[str, str, str]:
    """(a, b, out) index strings with ellipses expanded and the implicit output made explicit."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, out = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != 2:
        raise ValueError(f"quantized einsum takes exactly two operands, got {subscripts!r}")
    (a, b), ell = _expand(terms, [a_ndim, b_ndim])
    if not arrow:
        letters = a + b
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    for name, term, nd in (("first", a, a_ndim), ("second", b, b_ndim)):
        if len(term) != nd or len(set(term)) != len(term) or not term.isalpha():
            raise ValueError(f"einsum {subscripts!r}: the {name} operand (rank {nd}) needs distinct indices, one per axis")
    if set(out) - set(a + b) or len(set(out)) != len(out):
        raise ValueError(f"einsum {subscripts!r}: invalid output indices")
    return a, b, out


def einsum_via_dot_general(dot_general, subscripts: str, a, b, *, precision=None, preferred_element_type=None,
                           out_sharding=None, **unsupported):
    """einsum(subscripts, a, b) with its contraction done by `dot_general` (any signature-compatible one)."""
    if unsupported:
        raise ValueError(f"quantized einsum does not support the arguments {sorted(unsupported)}")
    a, b = jnp.asarray(a), jnp.asarray(b)
    ta, tb, out = parse(subscripts, a.ndim, b.ndim)
    def sum_unused(x, t, other):  # indices in one operand only and not in the output
        gone = tuple(i for i, c in enumerate(t) if c not in other and c not in out)
        return (jnp.sum(x, axis=gone), "".join(c for i, c in enumerate(t) if i not in gone)) if gone else (x, t)

    (a, ta), (b, tb) = sum_unused(a, ta, tb), sum_unused(b, tb, ta)
    batch = [c for c in ta if c in tb and c in out]
    contract = [c for c in ta if c in tb and c not in out]
    for c in batch + contract:
        if a.shape[ta.index(c)] != b.shape[tb.index(c)]:
            raise ValueError(f"einsum {subscripts!r}: index {c!r} has sizes {a.shape[ta.index(c)]} and {b.shape[tb.index(c)]}")
    dims = (([ta.index(c) for c in contract], [tb.index(c) for c in contract]),
            ([ta.index(c) for c in batch], [tb.index(c) for c in batch]))
    y = dot_general(a, b, dims, precision, preferred_element_type)
    got = "".join(batch) + "".join(c for c in ta if c not in tb) + "".join(c for c in tb if c not in ta)
    y = jnp.transpose(y, [got.index(c) for c in out])
    if out_sharding is not None:
        y = jax.lax.with_sharding_constraint(y, out_sharding)
    return y
