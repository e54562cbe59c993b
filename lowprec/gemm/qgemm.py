"""One quantized GEMM in canonical form: a[B,P,C] · b[B,Q,C] -> [B,P,Q], contracting the last axis.

All three training GEMMs are this shape (see dot_general.py), with both operands contraction-major
("TN"), the layout in which Hopper's FP8 GEMMs reach their full speed.

Execution paths (same numerics, chosen statically per GEMM):
- fp8: both operands FP8 (E4M3/E5M2) with scales constant along the contraction (per tensor / per
  row): a real FP8 dot_general, scales applied to its output. Per-tensor scales multiply into one
  float32 factor first (cuBLASLt's a_scale x b_scale). When every such scale is a power of two the
  GEMM writes bf16 directly and XLA folds the factor into the cuBLASLt call: exact, since scaling a
  bf16 value by a power of two does not round. Other scales keep a float32 output, scaled, then
  rounded once (XLA does not fold that conversion into the GEMM).
- emulated: codes times the scales that vary along the contraction (blocks, tiles) are formed
  exactly; when that product fits bf16 exactly (e.g. E2M1 x UE4M3, E4M3 x E8M0) the GEMM runs in
  bf16 with f32 accumulation, otherwise in f32 at HIGHEST precision. Scales constant along the
  contraction (tensor, row, the NVFP4 FP32 level, the 3/4 headroom) multiply the output. A backward
  operand that `fused_operand` serves arrives already in that form (a `Split`), from one pass over
  the tensor (transposed where the GEMM needs it).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lowprec.gemm import fused_operand
from lowprec.gemm.config import GemmConfig, OperandConfig
from lowprec.numerics.formats import FloatFormat
from lowprec.numerics.quantize import QArray, pow2_outer, quantize, quantize_pair, split_scales, tensor_amax
from lowprec.numerics.spec import QuantSpec
from lowprec.transforms.hadamard import apply_hadamard

_CANONICAL = (((2,), (2,)), ((0,), (0,)))
_FP8 = (jnp.dtype(jnp.float8_e4m3fn), jnp.dtype(jnp.float8_e5m2))
# Output dtypes with float32's exponent range: a power-of-two scale applied after rounding to them is exact.
_POW2_EXACT_OUT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
# Codes up to 2^emax are multiplied before the scales: keep code products far from float32 overflow.
_MAX_CODE_EXP = 48
_SCALE_SIG_BITS = {"e8m0": 1, "ue4m3": 4, "ue5m3": 4, "bf16": 8, "fp32": 24}

# Key slots: (role, slot) -> fold_in index, so no two roles or operands share random draws.
ROLE_IDS = {"fprop": 0, "dgrad": 1, "wgrad": 2}
SLOT_IDS = {"hadamard": 0, "lhs": 1, "rhs": 2}


@dataclasses.dataclass(frozen=True)
class Transposed:
    """A backward operand [B, P, C] given as the tensor it transposes, `of` [B, C, P] (dYᵀ, Xᵀ, Wᵀ), so
    that a block-quantized one can come from one fused pass over it (`fused_operand`)."""

    of: jax.Array


@dataclasses.dataclass(frozen=True)
class Split:
    """An operand as split_scales splits a QArray: bf16 codes·(scales varying along the contraction)
    and the float32 factors constant along it (`fused_operand.split_operand`'s output). A forward
    operand (`fused_operand.forward_operand`) also carries its clipping mask for the backward, packed
    one bit per element (`clip_mask.pack`, uint32 [..., C / 32])."""

    inner: jax.Array
    outer: jax.Array
    keep_bits: jax.Array | None = None


def role_key(key, role: str, slot: str):
    """fold_in(key, 8·role id + slot id): taken from all of the key's role keys at once (`_role_keys`)."""
    return None if key is None else _role_keys(key)[8 * ROLE_IDS[role] + SLOT_IDS[slot]]


def _role_keys(key):
    """fold_in(key, i) for every slot index i, in one vectorized computation. Every role_key call of a
    GEMM traces the same one, which XLA computes once (CSE): one small kernel per key, where a fold_in
    per (role, slot) was a kernel launch each (~12 per quantized GEMM's backward)."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, np.arange(8 * len(ROLE_IDS), dtype=np.uint32))


def fp8_eligible(spec: QuantSpec | None) -> bool:
    """Scales constant along the contraction and an FP8 element: runs on FP8 tensor cores."""
    return (spec is not None and spec.granularity in ("tensor", "channel")
            and jnp.dtype(spec.element.storage_dtype) in _FP8)


def bf16_exact(spec: QuantSpec) -> bool:
    """Whether code x (scales varying along the contraction) is always exact in bf16 (8 bits)."""
    fmt = spec.element
    bits = fmt.man_bits + 1 if isinstance(fmt, FloatFormat) else fmt.bits
    if spec.granularity in ("block", "tile"):
        bits += _SCALE_SIG_BITS[spec.scale_format] - 1
    return bits <= 8


def reusable_codes(spec: QuantSpec | None, other: QuantSpec | None) -> bool:
    """Whether `other` quantizes a tensor's transpose to exactly `spec`'s codes, transposed: the same
    per-tensor spec with deterministic rounding (the scale does not depend on the layout)."""
    return spec is not None and spec == other and spec.granularity == "tensor" and spec.rounding != "sr"


def rotate(x, cfg: GemmConfig, key, role: str):
    """The GEMM's Hadamard along the contraction axis (identity when it has none)."""
    if cfg.hadamard is None:
        return x
    k = role_key(key, role, "hadamard") if cfg.hadamard.needs_key else None
    return apply_hadamard(x, cfg.hadamard, axis=-1, key=k)


def _resolve_amax(x, amax, exact: bool):
    """(amax to quantize by, whether it is x's own): x's own where a recorded amax is non-positive
    (nothing recorded yet); an exact amax (the caller's reduction of x) as it is; None stays None."""
    if amax is None or exact:
        return amax, exact
    return jnp.where(amax > 0, amax, tensor_amax(x)), False


def quantize_operand(x, spec: QuantSpec | None, key, role: str, slot: str, amax=None, exact: bool = False):
    """x quantized along its last axis. `amax`: a recorded per-tensor amax (delayed scaling; a
    non-positive one means nothing was recorded yet and x's own amax is used), or with `exact` x's
    own amax, taken once by the caller."""
    if spec is None or isinstance(x, (QArray, Split)):  # already quantized (reused codes, a fused pass)
        return x
    k = role_key(key, role, slot) if spec.rounding == "sr" else None
    amax, exact = _resolve_amax(x, amax, exact)
    return quantize(x, spec, key=k, axis=-1, amax=amax, amax_exact=exact)


def quantize_operand_pair(x, spec: QuantSpec, amax=None, stored_transposed=False, exact: bool = False) -> tuple[QArray, QArray]:
    """x's per-tensor codes and the same codes transposed, for a backward GEMM that reuses them
    (`reusable_codes`); `amax`, `exact` as in quantize_operand, `stored_transposed` as in quantize_pair."""
    amax, exact = _resolve_amax(x, amax, exact)
    return quantize_pair(x, spec, amax=amax, amax_exact=exact, stored_transposed=stored_transposed)


def matmul(a, b, cfg: GemmConfig, precision=None, out_dtype=jnp.float32) -> jax.Array:
    """a[B,P,C] x b[B,Q,C] -> [B,P,Q] in out_dtype; each operand a high-precision array or a QArray."""
    if isinstance(a, QArray) and isinstance(b, QArray) and fp8_eligible(a.spec) and fp8_eligible(b.spec):
        acc = lax.Precision.HIGHEST if cfg.accumulation == "highest" else lax.Precision.DEFAULT
        direct = jnp.dtype(out_dtype) in _POW2_EXACT_OUT and pow2_outer(a.spec) and pow2_outer(b.spec)
        gemm_dtype = out_dtype if direct else jnp.float32
        out = lax.dot_general(a.data, b.data, _CANONICAL, precision=acc, preferred_element_type=gemm_dtype)
        return _scale_output(out, split_scales(a)[1], split_scales(b)[1], gemm_dtype).astype(out_dtype)
    ops, outers = [], []
    for x in (a, b):
        if isinstance(x, Split):
            ops.append(x.inner)
            outers.append(x.outer)
        elif isinstance(x, QArray):
            inner, outer = split_scales(x)
            if x.spec.element.emax > _MAX_CODE_EXP:  # code products could overflow: scale first
                inner, outer = inner * outer, jnp.ones((), jnp.float32)
                ops.append(inner)
            else:
                ops.append(inner.astype(jnp.bfloat16) if bf16_exact(x.spec) else inner)
            outers.append(outer)
        else:
            ops.append(x)
            outers.append(jnp.ones((), jnp.float32))
    dtype = jnp.bfloat16 if all(o.dtype == jnp.bfloat16 for o in ops) else jnp.float32
    prec = precision if dtype == jnp.bfloat16 else lax.Precision.HIGHEST
    out = lax.dot_general(ops[0].astype(dtype), ops[1].astype(dtype), _CANONICAL, precision=prec,
                          preferred_element_type=jnp.float32)
    return _scale_output(out, *outers, jnp.float32).astype(out_dtype)


def _scale_output(out, outer_a, outer_b, dtype):
    """out[B,P,Q] times a's factors [B,P,1] (or scalar) and b's [B,Q,1] (or scalar), in `dtype`.
    Two per-tensor factors become one (their float32 product) before touching the output."""
    if outer_a.size == 1 and outer_b.size == 1:
        return out * (outer_a * outer_b).reshape(()).astype(dtype)
    outer_b = jnp.swapaxes(outer_b, -1, -2) if outer_b.ndim else outer_b
    return out * outer_a.astype(dtype) * outer_b.astype(dtype)


def _fused(x, op: OperandConfig, cfg: GemmConfig, key, role: str, slot: str, amax):
    """An operand (an array, or a backward one's `Transposed`) as a `Split` from one fused pass where
    its kernel applies (no recorded amax, codes·scales exact in bf16); else a `Transposed` one
    materialized by a transpose, any other as it is. Forward operands are served only with QuEST
    sigma scales (one level, no headroom: inner is the dequantized tensor), where XLA takes the
    std's two reductions and the codes as passes of their own; others stay QArrays (XLA fuses
    their quantization into the GEMM's operand read)."""
    if isinstance(x, (QArray, Split)):
        return x
    transpose = isinstance(x, Transposed)
    t = x.of if transpose else x
    spec = op.spec
    if not (amax is None and spec is not None and bf16_exact(spec) and spec.element.emax <= _MAX_CODE_EXP
            and fused_operand.fits(t.shape, t.dtype, spec, cfg.hadamard)):
        return jnp.swapaxes(t, -1, -2) if transpose else t
    hkey = role_key(key, role, "hadamard") if cfg.hadamard is not None and cfg.hadamard.needs_key else None
    qkey = role_key(key, role, slot) if spec.rounding == "sr" else None
    if role != "fprop":
        return Split(*fused_operand.split_operand(t, spec, cfg.hadamard, qkey, hkey, transpose=transpose))
    if spec.scale_rule != "quest_sigma" or spec.headroom != 1.0:
        return t
    inner, keep_bits = fused_operand.forward_operand(t, spec, cfg.hadamard, qkey, hkey)
    return Split(inner, jnp.ones((), jnp.float32), keep_bits)


def prepare_operands(a, b, cfg: GemmConfig, key, role: str, amax=(None, None), pairs=(False, False),
                     a_exact: bool = False):
    """(rotated a, rotated b, quantized a, quantized b, a's codes transposed, b's codes transposed) as
    `cfg` says. An operand given as a QArray is used as it is (its GEMM must have no Hadamard); a
    backward one may come back rotated and quantized in one pass (a `Split`, for both);
    `amax`: recorded amaxes (a, b) or Nones (`a_exact`: amax[0] is a's own, see quantize_operand);
    `pairs`: which operands' codes a backward GEMM reuses transposed (the others' entry is None).
    A forward `Split` stands for its rotated operand too (its clipping mask is all a backward needs
    of it)."""
    a = _fused(a, cfg.lhs, cfg, key, role, "lhs", amax[0])
    b = _fused(b, cfg.rhs, cfg, key, role, "rhs", amax[1])
    if cfg.hadamard is not None:
        if isinstance(a, QArray) or isinstance(b, QArray):
            raise ValueError("pre-quantized operands cannot be rotated")
        a, b = (x if isinstance(x, Split) else rotate(x, cfg, key, role) for x in (a, b))
    qa, ta = quantize_operand_pair(a, cfg.lhs.spec, amax[0], exact=a_exact) if pairs[0] else (
        quantize_operand(a, cfg.lhs.spec, key, role, "lhs", amax[0], a_exact), None)
    # weights are usually stored [K, N] (Flax's kernel), so b = Wᵀ: let the fused cast read W as stored
    qb, tb = quantize_operand_pair(b, cfg.rhs.spec, amax[1], stored_transposed=True) if pairs[1] else (
        quantize_operand(b, cfg.rhs.spec, key, role, "rhs", amax[1]), None)
    return a, b, qa, qb, ta, tb


def qgemm(a, b, cfg: GemmConfig, key, role: str, precision=None, out_dtype=jnp.float32, amax=(None, None)) -> jax.Array:
    """Rotate, quantize and multiply both operands as `cfg` says; [B,P,Q] out in out_dtype."""
    _, _, qa, qb, _, _ = prepare_operands(a, b, cfg, key, role, amax)
    return matmul(qa, qb, cfg, precision, out_dtype)
