"""The quantized dot_general: any dimension numbers, three independently quantized GEMMs.

Operands are canonicalized to l[B,M,K] and r[B,N,K] (B = batch dims, M/N = free dims, K =
contracting dims, each flattened in order), so the three GEMMs are contraction-last products:
  fprop  Y[B,M,N]  = l · r      contracting K
  dgrad  dl[B,M,K] = dY · rᵀ    contracting N   (operands dY[B,M,N], rᵀ[B,K,N])
  wgrad  dr[B,N,K] = dYᵀ · l    contracting M   (operands dYᵀ[B,N,M], lᵀ[B,K,M])
The forward's Hadamard rotates along K (l R, r R); gradients are rotated back by Rᵀ where the
backward works in the rotated domain (fwd_q sources, or masks of the clipped/QuEST estimators).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from lowprec.gemm import clip_mask, fused_gradient
from lowprec.gemm.config import GemmConfig, Recipe
from lowprec.gemm.qgemm import (
    Split, Transposed, matmul, prepare_operands, qgemm, quantize_operand_pair, reusable_codes, role_key, rotate,
)
from lowprec.numerics.formats import IntFormat
from lowprec.numerics.quantize import QArray, block_outer, dequantize, element_scale, tensor_amax
from lowprec.transforms.hadamard import inverse_hadamard


def _check_dimension_numbers(lhs, rhs, dimension_numbers):
    try:
        (lc, rc), (lb, rb) = dimension_numbers
        lc, rc, lb, rb = (tuple(int(d) for d in dims) for dims in (lc, rc, lb, rb))
    except (TypeError, ValueError):
        raise ValueError(
            "dimension_numbers must be ((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)), "
            f"got {dimension_numbers!r}") from None
    for name, dims, x in (("lhs_contracting", lc, lhs), ("lhs_batch", lb, lhs), ("rhs_contracting", rc, rhs), ("rhs_batch", rb, rhs)):
        if any(not 0 <= d < x.ndim for d in dims) or len(set(dims)) != len(dims):
            raise ValueError(f"dot_general: {name} dims {dims} are invalid for an operand of rank {x.ndim}")
    if len(lc) != len(rc) or len(lb) != len(rb) or set(lc) & set(lb) or set(rc) & set(rb):
        raise ValueError(f"dot_general: mismatched dimension_numbers {dimension_numbers!r}")
    for kind, ld, rd in (("contracting", lc, rc), ("batch", lb, rb)):
        ls, rs = [lhs.shape[d] for d in ld], [rhs.shape[d] for d in rd]
        if ls != rs:
            raise ValueError(f"dot_general: {kind} dimensions differ in size: lhs {ld} -> {ls}, rhs {rd} -> {rs}")
    return (lc, rc), (lb, rb)


def _canonical(x, batch, contracting):
    free = tuple(d for d in range(x.ndim) if d not in batch and d not in contracting)
    perm = batch + free + contracting
    size = lambda dims: math.prod(x.shape[d] for d in dims)
    shape = (size(batch), size(free), size(contracting))
    return jnp.transpose(x, perm).reshape(shape), free


def canonicalize(lhs, rhs, dimension_numbers):
    """Validate dimension_numbers; return (l[B,M,K], r[B,N,K], dot_general's output shape)."""
    (lc, rc), (lb, rb) = _check_dimension_numbers(lhs, rhs, dimension_numbers)
    l, lfree = _canonical(lhs, lb, lc)
    r, rfree = _canonical(rhs, rb, rc)
    out_shape = tuple(lhs.shape[d] for d in lb) + tuple(lhs.shape[d] for d in lfree) + tuple(rhs.shape[d] for d in rfree)
    return l, r, out_shape


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *,
                recipe: Recipe, key=None, lhs_amax=None):
    """jax.lax.dot_general with fprop, dgrad and wgrad quantized as `recipe` says.

    `key` feeds stochastic rounding and per-call Hadamard signs (required when recipe.needs_key).
    The recipe's per-GEMM accumulation setting governs quantized GEMMs; `precision` applies to
    GEMMs the recipe leaves in high precision.
    `lhs_amax`: `tensor_amax(lhs)`, when the caller multiplies one input by several weights (q/k/v,
    gate/up) and takes it once (recipe.takes_lhs_amax): the products then share one reduction and,
    XLA merging the identical casts, one cast. Without it, a program over several devices reduces and
    casts the input once per product (XLA does not merge the amaxes' all-reduces). Same bits. Take it
    from `lax.stop_gradient(lhs)`: its cotangent is zero, and a path through the max would only add
    work (and zeros that can reorder lhs's gradient sum).
    """
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a lowprec.Recipe (see lowprec.recipes.get), got {type(recipe).__name__}")
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    _check_dimension_numbers(lhs, rhs, dimension_numbers)
    if recipe.delayed is not None:
        raise ValueError(f"recipe {recipe.name!r} uses delayed scaling, which carries amax state: call "
                         "lowprec.gemm.delayed_dot_general(..., state=...) or use quantize_model")
    if recipe.needs_key and key is None:
        raise ValueError(f"recipe {recipe.name!r} uses stochastic rounding or random Hadamard signs: pass key=jax.random.key(...)")
    if lhs_amax is not None and not recipe.takes_lhs_amax:
        raise ValueError(f"lhs_amax is for recipes whose forward scales lhs per tensor by its own amax, without a "
                         f"Hadamard rotation (recipe.takes_lhs_amax); recipe {recipe.name!r} quantizes its fprop lhs "
                         f"as {recipe.fprop.lhs.describe()!r} with hadamard={recipe.fprop.hadamard}")
    if not recipe.active:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    l, r, out_shape = canonicalize(lhs, rhs, dimension_numbers)
    out_dtype = jnp.dtype(preferred_element_type or jnp.result_type(lhs, rhs))
    x_amax = None if lhs_amax is None else jnp.asarray(lhs_amax, jnp.float32).reshape(())
    return qdot(l, r, key, None, x_amax, recipe, out_dtype, precision).reshape(out_shape)


def _fprop(l, r, key, amax, x_amax, recipe: Recipe, out_dtype, precision, backward: bool):
    """(y, rotated l, rotated r, quantized l, quantized r, l's codes transposed, r's codes transposed):
    when a `backward` follows, the transposed codes its GEMMs reuse are written here, with the forward's."""
    reuse_w, reuse_x, _ = _reuse(recipe) if backward else (False, False, False)
    amaxes = (amax[0], amax[1]) if amax is not None else (x_amax, None)
    a, b, qa, qb, ta, tb = prepare_operands(l, r, recipe.fprop, key, "fprop", amaxes, (reuse_x, reuse_w),
                                            a_exact=amax is None and x_amax is not None)
    return matmul(qa, qb, recipe.fprop, precision, out_dtype), a, b, qa, qb, ta, tb


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def qdot(l, r, key, amax, x_amax, recipe, out_dtype, precision):
    """The three GEMMs on canonical l[B,M,K], r[B,N,K] (a custom VJP).

    amax: None (every per-tensor scale from its tensor), or recorded amaxes (x, w, g) of l, r and
    the output gradient for delayed scaling (lowprec.gemm.delayed; 0: none recorded, the tensor's
    own). Their cotangent is (0, 0, the output gradient's own amax): how the backward hands that
    amax to its history. x_amax: None, or l's own amax taken by the caller (dot_general's lhs_amax).
    """
    return _fprop(l, r, key, amax, x_amax, recipe, out_dtype, precision, backward=False)[0]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["keep_bits"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class _Clip:
    """A block clipping mask along the last axis, packed one bit per element (`clip_mask.pack`):
    1/16 of the rotated operand it comes from, and what `fused_gradient` applies together with the
    inverse rotation in one pass."""

    keep_bits: jax.Array


def _keep_mask(x, q, estimator: str):
    """Where the gradient passes: not clipped (clipped_ste), or within half a step (quest_trust).
    x: the rotated operand; q: its QArray, or its forward `Split` (which carries the mask)."""
    if isinstance(q, Split):
        return _Clip(q.keep_bits)
    if not isinstance(q, QArray):
        return None
    fmt, layout = q.spec.element, q.layout
    if estimator == "quest_trust" and isinstance(fmt, IntFormat):
        step = element_scale(q)
        return jnp.abs(dequantize(q, jnp.float32) - x.astype(jnp.float32)) <= 0.5 * step * (1 + 1e-6)
    if layout.granularity == "block" and layout.axis == x.ndim - 1 and layout.padded == layout.shape:
        keep = clip_mask.keep(x, fmt.max_value * (q.scale.astype(jnp.float32) * block_outer(q.spec, q.global_scale)))
        return _Clip(clip_mask.pack(keep)) if x.shape[-1] % clip_mask.WORD == 0 else keep
    return jnp.abs(x.astype(jnp.float32)) <= fmt.max_value * element_scale(q)


def _reuse(recipe: Recipe) -> tuple[bool, bool, bool]:
    """Which backward operands are the forward's (or dgrad's) per-tensor codes, transposed:
    (W in dgrad, X in wgrad, dY of dgrad in wgrad). Same bits as re-quantizing, fewer passes."""
    f, d, w = recipe.fprop, recipe.dgrad, recipe.wgrad
    plain = lambda *cfgs: all(c.hadamard is None for c in cfgs)  # noqa: E731
    return (d.rhs.source == "hp" and plain(f, d) and reusable_codes(f.rhs.spec, d.rhs.spec),
            w.rhs.source == "hp" and plain(f, w) and reusable_codes(f.lhs.spec, w.rhs.spec),
            plain(d, w) and reusable_codes(d.lhs.spec, w.lhs.spec))


def _qdot_fwd(l, r, key, amax, x_amax, recipe, out_dtype, precision):
    y, a, b, qa, qb, x_t, w_t = _fprop(l, r, key, amax, x_amax, recipe, out_dtype, precision, backward=True)
    masks = None
    if recipe.estimator != "ste":
        masks = (_keep_mask(a, qa, recipe.estimator), _keep_mask(b, qb, recipe.estimator))
    reuse_w, reuse_x, _ = _reuse(recipe)
    fwd_q = lambda q: q.inner if isinstance(q, Split) else q  # noqa: E731  (a forward Split's inner is dequantized)
    saved_q = (x_t if reuse_x else fwd_q(qa) if recipe.wgrad.rhs.source == "fwd_q" else None,
               w_t if reuse_w else fwd_q(qb) if recipe.dgrad.rhs.source == "fwd_q" else None)
    # high-precision originals only where a backward GEMM re-quantizes them (else an empty stand-in)
    keep = lambda x, reused: x[..., :0] if reused else x  # noqa: E731
    return y, (keep(l, reuse_x), keep(r, reuse_w), key, amax, saved_q, masks)


def _qdot_bwd(recipe, out_dtype, precision, res, g):
    l, r, key, amax, (qa, qb), masks = res
    ref_x, ref_w, ref_g = amax if amax is not None else (None, None, None)
    fcfg: GemmConfig = recipe.fprop
    reuse_w, reuse_x, share_dy = _reuse(recipe)
    # Backward operands: the forward's transposed per-tensor codes (reuse), or a transpose of the
    # forward-quantized (rotated) tensor or of the high-precision original.
    w_t = qb if reuse_w else Transposed(_dequantized(qb, l.dtype) if qb is not None else r)
    x_t = qa if reuse_x else Transposed(_dequantized(qa, r.dtype) if qa is not None else l)
    if share_dy:
        g_d, g_w = quantize_operand_pair(g, recipe.dgrad.lhs.spec, ref_g)
    else:
        g_d, g_w = g, Transposed(g)
    # gradients that need no further masking or rotation come out in their operand's dtype directly
    direct = masks is None and fcfg.hadamard is None
    g_l = qgemm(g_d, w_t, recipe.dgrad, key, "dgrad", precision, l.dtype if direct else jnp.float32, (ref_g, ref_w))
    g_r = qgemm(g_w, x_t, recipe.wgrad, key, "wgrad", precision, r.dtype if direct else jnp.float32, (ref_g, ref_x))
    g_l = _to_input_domain(g_l, qb is not None and not reuse_w, masks and masks[0], fcfg, key, l.dtype)
    g_r = _to_input_domain(g_r, qa is not None and not reuse_x, masks and masks[1], fcfg, key, r.dtype, stored_t=True)
    amax_ct = None if amax is None else (jnp.zeros_like(ref_x), jnp.zeros_like(ref_w), tensor_amax(g))
    return g_l, g_r, None, amax_ct, None  # no gradient for x_amax (a statistic)


def _dequantized(q, dtype):
    """A saved forward operand in `dtype`: a QArray dequantized, or already dequantized (a `Split`'s inner)."""
    return dequantize(q, dtype) if isinstance(q, QArray) else q.astype(dtype)


def _to_input_domain(grad, rotated: bool, mask, fcfg: GemmConfig, key, dtype, stored_t: bool = False):
    """Apply the estimator mask (rotated domain) and undo the forward rotation where needed, in
    `dtype`; a clipping mask on a rotated gradient in one fused pass where the kernel fits.
    stored_t: the operand is usually stored transposed (a weight [K, N]): the pass writes its
    gradient in that layout (a transpose of it that XLA cancels with the canonical form's), so
    that the optimizer's update does not read it transposed."""
    had = fcfg.hadamard
    k = role_key(key, "fprop", "hadamard") if had is not None and had.needs_key else None
    if isinstance(mask, _Clip):
        if rotated and fused_gradient.fits(grad.shape, grad.dtype, had):
            out = fused_gradient.masked_inverse(grad, mask.keep_bits, had, k, dtype, transpose=stored_t)
            return jnp.swapaxes(out, -1, -2) if stored_t else out
        mask = clip_mask.unpack(mask.keep_bits)
    if mask is None and not rotated:
        return grad.astype(dtype)
    if had is None:
        return (grad * mask if mask is not None else grad).astype(dtype)
    if not rotated:
        grad = rotate(grad, fcfg, key, "fprop")
    if mask is not None:
        grad = grad * mask
    return inverse_hadamard(grad, had, axis=-1, key=k).astype(dtype)


qdot.defvjp(_qdot_fwd, _qdot_bwd)
