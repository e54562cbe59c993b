"""Block-diagonal (randomized) Hadamard rotations along a GEMM contraction axis.

A rotation R applied along K to both GEMM operands cancels in the product,
(xR)(wR)^T = x w^T, while spreading outliers across each block before quantization
(NVFP4 RHT-16, NVINT4 32, Quartet 32, Tseng et al. 64, QuEST 128, HALO full-dim).

R = H_n/sqrt(n) (Sylvester) optionally combined with a sign vector s:

- ``sign_side="left"``  (TransformerEngine): R = diag(s)·H, signs act before mixing.
- ``sign_side="right"`` (Quartet backward): R = H·diag(s). Then xR = (xH)·diag(s) only
  flips signs of the coordinates of xH. A symmetric abs-max quantizer commutes with
  element sign flips (block amax unchanged, grid symmetric), so Q(xR)·Q(wR)^T =
  Q(xH)·D·D^T·Q(wH)^T = Q(xH)·Q(wH)^T: right-side signs are a no-op (in distribution
  for stochastic rounding). Offered for parity with Quartet.

Signs are a function of (spec, key) only, so passing the same key for both operands of
a GEMM gives both the same R.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

# TransformerEngine's fixed RHT sign vector; bit i of 0xD7E8 is set where s_i = -1.
TE_FIXED_SIGNS_16: tuple[int, ...] = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)

SIZES = (0, 16, 32, 64, 128, 256)
SIGN_MODES = ("none", "fixed_te", "per_call")
SIGN_SIDES = ("left", "right")
IMPLS = ("matmul", "butterfly")
_COMPUTE_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _check_length(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return int(n)


def hadamard_matrix(n: int, dtype=jnp.float32) -> Array:
    """Normalized Sylvester Hadamard H_n/sqrt(n) (symmetric, orthogonal), n a power of two."""
    n = _check_length("n", n)
    if not _is_power_of_two(n):
        raise ValueError(f"n must be a power of two (1, 2, 4, ...), got {n}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {jnp.dtype(dtype).name}")
    # ±1 times the correctly rounded 1/sqrt(n): every entry is exactly ±dtype(1/sqrt(n)).
    return jnp.asarray(_sylvester(n), dtype=dtype) * jnp.asarray(1.0 / np.sqrt(n), dtype=dtype)


def _sylvester(n: int) -> np.ndarray:
    """The unnormalized ±1 Sylvester Hadamard matrix H_n (int8)."""
    h = np.ones((1, 1), dtype=np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def random_signs(key: Array, n: int, dtype=jnp.float32) -> Array:
    """A vector of n independent ±1 values drawn from an explicit jax.random key."""
    n = _check_length("n", n)
    if key is None:
        raise ValueError("random_signs needs an explicit jax.random key, got None")
    return jax.random.rademacher(key, (n,), dtype=dtype)


@dataclass(frozen=True, kw_only=True)
class HadamardSpec:
    """How to rotate blocks of an axis.

    size: block length, one of 16, 32, 64, 128, 256, or 0 for the full axis length
        (which must then be a power of two).
    signs: "none" (R = H), "fixed_te" (TE_FIXED_SIGNS_16; size 16 only), or
        "per_call" (drawn from the key passed at call time).
    sign_side: "left" (R = diag(s)·H, TE) or "right" (R = H·diag(s), Quartet; a no-op
        under symmetric abs-max quantizers, see module docstring). Has no effect when
        signs == "none".
    impl: "matmul" (blocks @ R, O(block) flops per element) or "butterfly" (fast
        Walsh-Hadamard, log2(block) add/sub stages; prefer it for large full-axis blocks).
        Both compute the same R to fp32 rounding.
    """

    size: int
    signs: str = "none"
    sign_side: str = "left"
    impl: str = "matmul"

    def __post_init__(self):
        if isinstance(self.size, bool) or self.size not in SIZES:
            raise ValueError(f"HadamardSpec.size must be one of {SIZES} (0 = full axis), got {self.size!r}")
        if self.signs not in SIGN_MODES:
            raise ValueError(f"HadamardSpec.signs must be one of {SIGN_MODES}, got {self.signs!r}")
        if self.sign_side not in SIGN_SIDES:
            raise ValueError(f"HadamardSpec.sign_side must be one of {SIGN_SIDES}, got {self.sign_side!r}")
        if self.impl not in IMPLS:
            raise ValueError(f"HadamardSpec.impl must be one of {IMPLS}, got {self.impl!r}")
        if self.signs == "fixed_te" and self.size != 16:
            raise ValueError(f"HadamardSpec.signs='fixed_te' requires size=16, got size={self.size}")

    @property
    def needs_key(self) -> bool:
        """Whether apply/inverse must be given a key (per-call signs)."""
        return self.signs == "per_call"

    def block_size(self, length: int) -> int:
        """The block length used on an axis of `length` elements (resolves size 0)."""
        length = _check_length("axis length", length)
        block = self.size or length
        if not _is_power_of_two(block):
            raise ValueError(
                f"HadamardSpec.size=0 uses the full axis, whose length must be a power of two; got {length}")
        if length % block:
            raise ValueError(f"HadamardSpec.size={block} does not divide the axis length {length}")
        return block


def _signs(spec: HadamardSpec, block: int, key: Array | None) -> Array | None:
    """The sign vector for `spec` (None for no signs), validating the key."""
    if spec.needs_key and key is None:
        raise ValueError("HadamardSpec.signs='per_call' needs a key; pass key=... (the same key for both operands)")
    if not spec.needs_key and key is not None:
        raise ValueError(f"a key was given but HadamardSpec.signs={spec.signs!r} does not use one; "
                         "pass key=None (only signs='per_call' draws from the key)")
    if spec.signs == "none":
        return None
    if spec.signs == "fixed_te":
        return jnp.asarray(TE_FIXED_SIGNS_16, dtype=jnp.float32)
    return random_signs(key, block)


def _side(spec: HadamardSpec, transpose: bool) -> str:
    """Where the signs go; R^T = (D·H)^T = H·D since H is symmetric, so transposing flips the side."""
    if not transpose:
        return spec.sign_side
    return "right" if spec.sign_side == "left" else "left"


def _signed_hadamard(block: int, s: Array | None, side: str, normalized: bool = True) -> Array:
    """diag(s)·H (side "left") or H·diag(s) (side "right"); H when s is None. f32; H = H_n/sqrt(n),
    or the ±1 matrix H_n when not normalized."""
    h = hadamard_matrix(block) if normalized else jnp.asarray(_sylvester(block), jnp.float32)
    if s is None:
        return h
    return s[:, None] * h if side == "left" else h * s[None, :]


def rotation_matrix(spec: HadamardSpec, *, length: int, key: Array | None = None,
                    dtype=jnp.float32, normalized: bool = True, transpose: bool = False) -> Array:
    """The block rotation R (block x block) that apply_hadamard uses on an axis of `length` (Rᵀ, which
    inverse_hadamard uses, when transpose); with normalized=False, R·sqrt(block): the ±1 matrix that
    the bf16 matmul form multiplies by before scaling its float32 sums by 1/sqrt(block)."""
    block = spec.block_size(length)
    return _signed_hadamard(block, _signs(spec, block, key), _side(spec, transpose), normalized).astype(dtype)


def _fwht(x: Array) -> Array:
    """Unnormalized Sylvester Walsh-Hadamard transform along the last axis (length 2^k)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = jnp.stack([a + b, a - b], axis=-2).reshape(*lead, n)
        h *= 2
    return x


def _rotate_blocks(xb: Array, spec: HadamardSpec, s: Array | None, transpose: bool) -> Array:
    """xb [..., block] (f32, or bf16 for the matmul form) times R (or R^T when transpose) along the
    last axis; float32 out."""
    block = xb.shape[-1]
    side = _side(spec, transpose)
    if spec.impl == "matmul" and xb.dtype == jnp.bfloat16:
        # ±1 entries are exact in bf16, so bf16 products are exact and sums f32: the f32 result of the
        # HIGHEST-precision form (up to summation order) from half the bytes, and no f32 copy of x.
        r = _signed_hadamard(block, s, side, normalized=False).astype(jnp.bfloat16)
        y = lax.dot_general(xb, r, (((xb.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        return y * np.float32(1.0 / np.sqrt(block))
    if spec.impl == "matmul":
        return jnp.matmul(xb, _signed_hadamard(block, s, side), precision=lax.Precision.HIGHEST)
    if s is not None and side == "left":
        xb = xb * s
    y = _fwht(xb) * np.float32(1.0 / np.sqrt(block))
    if s is not None and side == "right":
        y = y * s
    return y


@partial(jax.jit, static_argnames=("spec", "axis", "transpose"))
def _rotate_axis(x: Array, spec: HadamardSpec, axis: int, key: Array | None, transpose: bool) -> Array:
    """Rotate blocks along `axis` by R (R^T when transpose); jitted as a unit so eager
    calls compile once per (shape, spec) rather than once per op."""
    if x.dtype not in _COMPUTE_DTYPES:
        raise ValueError(f"x.dtype must be one of {[jnp.dtype(d).name for d in _COMPUTE_DTYPES]}, got {x.dtype}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be an int in [{-x.ndim}, {x.ndim}) for x of rank {x.ndim}, got {axis}")
    axis %= x.ndim
    length = x.shape[axis]
    try:
        block = spec.block_size(length)
    except ValueError as e:
        raise ValueError(f"axis {axis} of x with shape {x.shape}: {e}") from None
    s = _signs(spec, block, key)
    compute = jnp.bfloat16 if x.dtype == jnp.bfloat16 and spec.impl == "matmul" else jnp.float32
    xt = jnp.moveaxis(x.astype(compute), axis, -1)
    xb = xt.reshape(*xt.shape[:-1], length // block, block)
    y = _rotate_blocks(xb, spec, s, transpose).reshape(xt.shape)
    y = jnp.moveaxis(y, -1, axis).astype(x.dtype)
    # a narrowing cast is rounded for real: a consumer's upcast would otherwise cancel it on GPUs
    # (XLA deletes float convert chains when excess precision is allowed, its default there)
    return y if x.dtype == jnp.float32 else lax.optimization_barrier(y)


def _transform(x: Array, spec: HadamardSpec, axis: int, key: Array | None, transpose: bool) -> Array:
    """Check the static arguments (they must be hashable for jit), then rotate."""
    if not isinstance(spec, HadamardSpec):
        raise ValueError(f"spec must be a HadamardSpec, got {type(spec).__name__}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be an int, got {axis!r}")
    return _rotate_axis(jnp.asarray(x), spec, int(axis), key, transpose)


def apply_hadamard(x: Array, spec: HadamardSpec, *, axis: int, key: Array | None = None) -> Array:
    """Rotate each block of `spec.size` along `axis` (the contraction axis): block -> block @ R.

    Sums in f32 (bf16 x with the matmul form: a bf16 GEMM against the exact ±1 matrix, then 1/sqrt(n);
    otherwise an f32 matmul at precision HIGHEST), returned in x's dtype (f32/bf16/f16).
    For a GEMM, rotate both operands along K with the same spec and key.
    """
    return _transform(x, spec, axis, key, transpose=False)


def inverse_hadamard(y: Array, spec: HadamardSpec, *, axis: int, key: Array | None = None) -> Array:
    """Undo apply_hadamard with the same spec and key: block -> block @ R^T (R is orthogonal)."""
    return _transform(y, spec, axis, key, transpose=True)
