"""quantize / dequantize / fake_quant: a tensor, a QuantSpec and an axis in; low-bit data and scales out.

Grouping: the tensor is viewed so that each scale group is a trailing axis (tensor: all elements;
channel: the `axis`; block: [..., n/k, k] along `axis`; tile: [..., R/k, k, C/k, k] over
`tile_axis` × `axis`). Statistics reduce over the group axes, so scales broadcast against the view.
Stored scales have the tensor's rank, with each grouped axis divided by the block size.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lowprec.numerics import fused
from lowprec.numerics.formats import IntFormat, get_format
from lowprec.numerics.rounding import FLT_MAX, div_rn, round_finite
from lowprec.numerics.scales import POW2_RULES, SIGMA_RULES, cast_scale, rule_scale, scale_storage_dtype
from lowprec.numerics.spec import QuantSpec


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where the scale groups of one quantized tensor sit (static)."""

    granularity: str
    block: int
    axis: int
    tile_axis: int | None
    shape: tuple[int, ...]  # original (unpadded) shape
    padded: tuple[int, ...]

    def group(self, x):
        """View x [*padded] with each scale group on trailing axes; returns (view, reduce_axes)."""
        if self.granularity == "tensor":
            return x, tuple(range(x.ndim))
        if self.granularity == "channel":
            return x, (self.axis,)
        k = self.block
        if self.granularity == "block":
            v = jnp.moveaxis(x, self.axis, -1)
            return v.reshape(v.shape[:-1] + (v.shape[-1] // k, k)), (-1,)
        v = jnp.moveaxis(x, (self.tile_axis, self.axis), (-2, -1))
        r, c = v.shape[-2:]
        return v.reshape(v.shape[:-2] + (r // k, k, c // k, k)), (-3, -1)

    def ungroup(self, v):
        if self.granularity in ("tensor", "channel"):
            return v
        if self.granularity == "block":
            v = v.reshape(v.shape[:-2] + (-1,))
            return jnp.moveaxis(v, -1, self.axis)
        v = v.reshape(v.shape[:-4] + (v.shape[-4] * v.shape[-3], v.shape[-2] * v.shape[-1]))
        return jnp.moveaxis(v, (-2, -1), (self.tile_axis, self.axis))

    def compact_scale(self, s):
        """Scale in the grouped view (keepdims) -> stored layout (tensor rank, grouped axes / k)."""
        if self.granularity == "tensor":
            return s.reshape(())
        if self.granularity == "channel":
            return s
        if self.granularity == "block":
            return jnp.moveaxis(s[..., 0], -1, self.axis)
        return jnp.moveaxis(s[..., 0, :, 0], (-2, -1), (self.tile_axis, self.axis))

    def view_scale(self, s):
        if self.granularity in ("tensor", "channel"):
            return s
        if self.granularity == "block":
            return jnp.moveaxis(s, self.axis, -1)[..., None]
        s = jnp.moveaxis(s, (self.tile_axis, self.axis), (-2, -1))
        return s[..., :, None, :, None]

    def pad(self, x):
        widths = [(0, p - n) for n, p in zip(self.shape, self.padded)]
        return jnp.pad(x, widths) if any(w for _, w in widths) else x

    def crop(self, x):
        return x[tuple(slice(0, n) for n in self.shape)] if self.padded != self.shape else x


def _layout(shape, spec: QuantSpec, axis: int, tile_axis: int | None) -> _Layout:
    ndim = len(shape)
    if spec.granularity == "tensor":
        return _Layout("tensor", 0, 0, None, tuple(shape), tuple(shape))
    if ndim == 0:
        raise ValueError(f"granularity {spec.granularity!r} needs an array of rank >= 1")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array of rank {ndim}")
    axis %= ndim
    if spec.granularity == "tile":
        if tile_axis is None:
            if ndim < 2 or axis < ndim - 2:
                raise ValueError(f"tile granularity needs tile_axis= when axis={axis} is not one of the last two of rank {ndim}")
            tile_axis = ndim - 2 if axis == ndim - 1 else ndim - 1
        if not -ndim <= tile_axis < ndim or tile_axis % ndim == axis:
            raise ValueError(f"tile_axis {tile_axis} must be a valid axis different from axis {axis} (rank {ndim})")
        tile_axis %= ndim
    else:
        tile_axis = None
    padded = list(shape)
    for ax in (axis, tile_axis):
        if ax is None or spec.granularity == "channel":
            continue
        n, k = shape[ax], spec.block
        if n % k:
            if not spec.pad:
                raise ValueError(
                    f"block size {k} does not divide axis {ax} of length {n} (shape {tuple(shape)}); "
                    "use a block size that divides it or QuantSpec(pad=True)"
                )
            padded[ax] = -(-n // k) * k
    return _Layout(spec.granularity, spec.block, axis, tile_axis, tuple(shape), tuple(padded))


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["data", "scale", "global_scale"],
    meta_fields=["spec", "layout", "dtype"],
)
@dataclasses.dataclass(frozen=True)
class QArray:
    """Quantized tensor: element codes in a low-bit dtype, per-group scales, optional FP32 tensor scale.

    data:         element values (float formats) or integer codes (int formats), original shape.
    scale:        dequantization scales per group, in the scale format's storage dtype.
    global_scale: float32 S_dec of the two-level (NVFP4) chain, else None.
    """

    data: jax.Array
    scale: jax.Array
    global_scale: jax.Array | None
    spec: QuantSpec
    layout: _Layout
    dtype: Any

    @property
    def shape(self):
        return self.layout.shape

    @property
    def nbytes(self) -> int:
        """Bytes of data (at the storage dtype's real width) plus scales."""
        elem_bits = jnp.dtype(self.data.dtype).itemsize * 8
        if jnp.dtype(self.data.dtype) in (jnp.dtype(jnp.float4_e2m1fn), jnp.dtype(jnp.int4)):
            elem_bits = 4
        total = self.data.size * elem_bits / 8 + self.scale.size * jnp.dtype(self.scale.dtype).itemsize
        return int(np.ceil(total)) + (4 if self.global_scale is not None else 0)


def abs_max(x, axis=None, keepdims: bool = False) -> jax.Array:
    """max |x| of float32 x over `axis`, NaN where the values hold one (else Inf where they hold one).

    XLA:CPU's float max reduction drops NaNs (openxla/xla#21461; jax 0.10.2 returned 1.0, or -inf,
    for the max of a 4096-vector of ones and one NaN), so on CPUs it is `abs_max_bits`. GPUs keep
    the float max: NaN-propagating there, and 1-2% faster per emulated GEMM (H100, 2026-11-23).
    """
    return lax.platform_dependent(x, cpu=functools.partial(abs_max_bits, axis=axis, keepdims=keepdims),
                                  default=lambda v: jnp.max(jnp.abs(v), axis=axis, keepdims=keepdims))


def abs_max_bits(x, axis=None, keepdims: bool = False) -> jax.Array:
    """abs_max as an integer max of |x|'s bit patterns, which order as the values do and put NaN
    above Inf: NaN-propagating on every backend (also in Triton, whose float max drops NaNs)."""
    bits = lax.bitcast_convert_type(x, jnp.int32) & jnp.int32(0x7FFFFFFF)
    return lax.bitcast_convert_type(jnp.max(bits, axis=axis, keepdims=keepdims), jnp.float32)


def _stats(view, reduce_axes, spec):
    return abs_max(view, reduce_axes, keepdims=True), spread(view, reduce_axes, spec)


def spread(view, reduce_axes, spec: QuantSpec):
    """The QuEST rules' statistic per group (keepdims): the standard deviation (quest_sigma) or the
    RMS (quest_rms); None for amax-based rules."""
    if spec.scale_rule == "quest_sigma":
        return jnp.std(view, axis=reduce_axes, keepdims=True)
    if spec.scale_rule == "quest_rms":
        return jnp.sqrt(jnp.mean(view * view, axis=reduce_axes, keepdims=True))
    return None


def tensor_amax(x) -> jax.Array:
    """max |x| in float32 (NaN/Inf propagate): per-tensor quantization's statistic, written as the
    quantizer writes it so that XLA merges a caller's copy (a delayed-scaling history) with its own."""
    return abs_max(jnp.asarray(x).astype(jnp.float32), keepdims=True).reshape(())


def _scales(view, reduce_axes, spec: QuantSpec, amax_override=None, exact: bool = False):
    """(encode multiplier, or None where x/s is exact; decode scale per group; global S_dec or None).
    exact: amax_override is the view's own amax (per tensor), so the view is not reduced again."""
    if exact:
        amax, sigma = jnp.asarray(amax_override, jnp.float32).reshape((1,) * view.ndim), None
    else:
        amax, sigma = _stats(view, reduce_axes, spec)
        if amax_override is not None:  # delayed scaling: a recorded amax; non-finite data still poisons
            amax = jnp.where(jnp.isfinite(amax), jnp.asarray(amax_override, jnp.float32), jnp.nan)
    return group_scales(amax, sigma, spec)


def group_scales(amax, sigma, spec: QuantSpec, tensor_level=None, *, portable: bool = False,
                 divide=div_rn, cast=cast_scale):
    """`_scales` from the groups' statistics: float32 amax (NaN/Inf where a group holds one) and, for
    the QuEST rules, sigma. The two-level chain's tensor level, `tensor_scales` of the max of the
    groups' amaxes, may be given (a kernel that sees one tile). portable: as in round_finite.
    divide, cast: the correctly rounded division and the scales' rounding (`cast_scale`); a kernel
    may pass its hardware's, which give the same values."""
    fmt = spec.element
    if not spec.two_level:
        s = cast(rule_scale(spec.scale_rule, fmt, amax, sigma, spec.amax_eps), spec.scale_format, portable=portable)
        # A power of two divides exactly on any backend; other scales encode with their correctly
        # rounded reciprocal, one per group (a per-element division is not IEEE on GPUs).
        enc = None if spec.scale_rule in POW2_RULES else divide(1.0, jnp.where(s > 0, s, 1.0))
        return enc, jnp.where(jnp.isfinite(amax), s, jnp.nan), None
    if tensor_level is None:  # the barrier keeps XLA from rewriting this max of maxes as a second
        tensor_level = tensor_scales(spec, abs_max(jax.lax.optimization_barrier(amax)))  # full pass
    s_enc, s_dec = tensor_level
    mult = s_enc * jnp.float32(1.0 / fmt.max_value)  # folded first, then one multiply per block
    s_b = cast(jnp.minimum(amax * mult, _scale_max(spec)), spec.scale_format, portable=portable)
    enc = jnp.minimum(divide(1.0, s_b * s_dec), FLT_MAX)
    return enc, jnp.where(jnp.isfinite(amax), s_b, jnp.nan), s_dec


def _scale_max(spec: QuantSpec) -> float:
    return get_format(spec.scale_format).max_value if spec.scale_format.startswith("ue") else FLT_MAX


def tensor_scales(spec: QuantSpec, t_amax):
    """The two-level (NVFP4) chain's (S_enc, S_dec) from the tensor amax, as TE's kernel computes them:
    S_enc = max_elem·max_scale/amax_tensor (1 if amax is 0), capped at FLT_MAX; S_dec = 1/S_enc."""
    s_enc = jnp.where(t_amax > 0, div_rn(spec.element.max_value * _scale_max(spec), t_amax), 1.0)
    s_enc = jnp.minimum(s_enc, FLT_MAX)
    return s_enc, div_rn(1.0, s_enc)


def encode(view, enc, s, s_dec, spec: QuantSpec, key=None, *, draws=None, portable: bool = False):
    """float32 codes of a grouped view from `group_scales`' (enc, s, s_dec); zero in non-finite
    groups. draws, portable: as in round_finite.

    Non-finite groups store zero codes and carry NaN in their scale. With one scale level a scaled
    value is non-finite only where its group's scale is NaN (amax propagates NaN/Inf), so a
    per-group test replaces the element-wise one and the quantization stays one fused pass. The
    two-level chain's encode factor can overflow a value, so it keeps the element-wise test.
    """
    scaled = view * enc if enc is not None else view / jnp.where(s > 0, s, 1.0)
    if spec.headroom != 1.0:
        scaled = scaled * spec.headroom
    finite = jnp.isfinite(s) if s_dec is None else jnp.isfinite(scaled)
    codes = jnp.where(finite, round_finite(scaled, spec.element, spec.rounding, key, draws=draws,
                                                   portable=portable), 0.0)
    fmt = spec.element
    if isinstance(fmt, IntFormat) and not fmt.centered:
        codes = codes * (2.0**fmt.frac_bits)
    return codes


def _check(spec, key, fn: str) -> None:
    if not isinstance(spec, QuantSpec):
        raise ValueError(f"spec must be a QuantSpec (see lowprec.specs.get), got {type(spec).__name__}")
    if spec.rounding == "sr" and key is None:
        raise ValueError(f"QuantSpec.rounding='sr' needs an explicit jax.random key: {fn}(x, spec, key=...)")


def _check_amax(spec: QuantSpec, amax, amax_exact: bool, fn: str) -> None:
    if amax is not None and spec.granularity != "tensor":
        raise ValueError(f"{fn}(amax=...) is for per-tensor scaling, not granularity {spec.granularity!r}")
    if amax_exact and (amax is None or spec.scale_rule in SIGMA_RULES):
        raise ValueError(f"{fn}(amax_exact=True) needs amax= and an amax-based scale_rule, got amax="
                         f"{'None' if amax is None else 'given'} and scale_rule {spec.scale_rule!r}")


def quantize(x: jax.Array, spec: QuantSpec, *, key: jax.Array | None = None, axis: int = -1,
             tile_axis: int | None = None, amax: jax.Array | None = None, amax_exact: bool = False) -> QArray:
    """Quantize x along `axis` (the GEMM contraction axis for block/channel scales) per `spec`.

    amax: use this (scalar) amax instead of the tensor's own, for delayed scaling; only with
    granularity 'tensor'. Values beyond it saturate; a non-finite x still gives a NaN scale.
    amax_exact: `amax` is x's own max |x| (`tensor_amax(x)`, NaN/Inf included), taken once by a caller
    that quantizes x several times; x is then not reduced again.
    """
    _check(spec, key, "quantize")
    _check_amax(spec, amax, amax_exact, "quantize")
    x = jnp.asarray(x)
    return _quantize(x, key, amax, spec, _layout(x.shape, spec, axis, tile_axis), amax_exact)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _quantize(x, key, amax, spec: QuantSpec, layout: _Layout, amax_exact: bool = False) -> QArray:
    view, reduce_axes = layout.group(layout.pad(x.astype(jnp.float32)))
    enc, s, s_dec = _scales(view, reduce_axes, spec, amax, amax_exact)
    codes = encode(view, enc, s, s_dec, spec, key)
    fmt = spec.element
    data = layout.crop(layout.ungroup(codes)).astype(fmt.storage_dtype)
    scale = layout.compact_scale(s).astype(scale_storage_dtype(spec.scale_format))
    return QArray(data=data, scale=scale, global_scale=s_dec, spec=spec, layout=layout, dtype=x.dtype)


def pow2_outer(spec: QuantSpec) -> bool:
    """Whether the factors split_scales puts outside the K sum are always powers of two."""
    return spec.scale_rule in POW2_RULES and spec.headroom == 1.0 and spec.scale_format in ("fp32", "bf16", "e8m0")


def transpose_codes(q: QArray, data_t: jax.Array | None = None) -> QArray:
    """A per-tensor QArray of the last-two-axes transpose, by moving its codes (no re-quantization);
    data_t: those codes already transposed (written by a fused pass)."""
    if q.layout.granularity != "tensor":
        raise ValueError("only per-tensor codes can be transposed without re-quantization")
    swap = lambda shape: shape[:-2] + (shape[-1], shape[-2])  # noqa: E731
    layout = dataclasses.replace(q.layout, shape=swap(q.layout.shape), padded=swap(q.layout.padded))
    return dataclasses.replace(q, data=jnp.swapaxes(q.data, -1, -2) if data_t is None else data_t, layout=layout)


def quantize_pair(x: jax.Array, spec: QuantSpec, *, amax: jax.Array | None = None, amax_exact: bool = False,
                  stored_transposed: bool = False) -> tuple[QArray, QArray]:
    """(quantize(x, spec), the same codes with the last two axes swapped), for a per-tensor spec with
    deterministic rounding (its scale does not depend on the layout): the operands of a forward and a
    backward GEMM. With power-of-two scales onto an FP8 dtype both layouts come from one pass over x
    (`fused.cast_transpose`, a Pallas kernel on GPUs); same bits either way.

    stored_transposed: x is a transpose of an array stored the other way (a [K, N] weight seen as
    [N, K]); the fused pass then reads the stored layout, so Wᵀ is never materialized.
    amax, amax_exact: as in `quantize`.
    """
    if isinstance(spec, QuantSpec) and (spec.granularity != "tensor" or spec.rounding == "sr"):
        raise ValueError(f"quantize_pair needs a per-tensor spec with deterministic rounding, got {spec.describe()!r}")
    _check(spec, None, "quantize_pair")
    _check_amax(spec, amax, amax_exact, "quantize_pair")
    x = jnp.asarray(x)
    fmt = spec.element
    if not (x.ndim >= 2 and pow2_outer(spec) and fused.writes(fmt)):
        q = quantize(x, spec, amax=amax, amax_exact=amax_exact)
        return q, transpose_codes(q)
    layout = _layout(x.shape, spec, -1, None)
    _, s, _ = _scales(x.astype(jnp.float32), tuple(range(x.ndim)), spec, amax, amax_exact)
    s = layout.compact_scale(s)
    mult = jnp.stack([1.0 / jnp.where(s > 0, s, 1.0), jnp.isfinite(s).astype(jnp.float32)])  # 1/s is exact
    if stored_transposed:  # XLA cancels the two transposes
        data_t, data = fused.cast_transpose(jnp.swapaxes(x, -1, -2), mult, fmt)
    else:
        data, data_t = fused.cast_transpose(x, mult, fmt)
    q = QArray(data=data, scale=s.astype(scale_storage_dtype(spec.scale_format)), global_scale=None,
               spec=spec, layout=layout, dtype=x.dtype)
    return q, transpose_codes(q, data_t)


def split_scales(q: QArray) -> tuple[jax.Array, jax.Array]:
    """(inner, outer) float32 with dequantize(q) == inner·outer.

    inner = codes times the scales that vary along the quantization axis (block/tile scales);
    outer = the factors constant along it (tensor or per-channel scale, the two-level S_dec, the
    1/headroom constant), broadcastable to the tensor. A GEMM must keep `inner` inside its K sum but
    may apply `outer` to its output, which is what lets per-tensor/per-row FP8 run on FP8 tensor
    cores and keeps E2M1 x UE4M3 / E8M0 products exact in bf16.
    """
    spec, layout = q.spec, q.layout
    codes = q.data.astype(jnp.float32)
    fmt = spec.element
    if isinstance(fmt, IntFormat) and not fmt.centered:
        codes = codes * (2.0**-fmt.frac_bits)
    scale = q.scale.astype(jnp.float32)
    if layout.granularity in ("tensor", "channel"):
        return codes, _with_headroom(scale, spec)
    view, _ = layout.group(layout.pad(codes))
    inner = layout.crop(layout.ungroup(view * layout.view_scale(scale)))
    return inner, block_outer(spec, q.global_scale)


def block_outer(spec: QuantSpec, global_scale=None) -> jax.Array:
    """split_scales' outer factor for block and tile scales: the two-level S_dec (or 1) over the
    headroom constant."""
    return _with_headroom(global_scale if global_scale is not None else jnp.ones((), jnp.float32), spec)


def _with_headroom(outer, spec: QuantSpec):
    return outer / spec.headroom if spec.headroom != 1.0 else outer


def element_scale(q: QArray) -> jax.Array:
    """Per-element value of one code step (code -> value multiplier), broadcast to the full shape."""
    unit = dataclasses.replace(q, data=jnp.ones(q.data.shape, q.data.dtype))
    inner, outer = split_scales(unit)
    return inner * outer


def dequantize(q: QArray, dtype=None) -> jax.Array:
    """Back to real values: code·scale (·S_dec for two-level), in `dtype` (default: the input's)."""
    return _dequantize(q, jnp.dtype(dtype or q.dtype))


@functools.partial(jax.jit, static_argnums=(1,))
def _dequantize(q: QArray, dtype) -> jax.Array:
    inner, outer = split_scales(q)
    return (inner * outer).astype(dtype)


def quantize_dequantize(x, spec: QuantSpec, *, key=None, axis: int = -1, tile_axis: int | None = None):
    """dequantize(quantize(x)) in x's dtype, with no gradient rule (see fake_quant for STE)."""
    return dequantize(quantize(x, spec, key=key, axis=axis, tile_axis=tile_axis), x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 3, 4))
def _fake_quant_ste(x, spec, key, axis, tile_axis):
    return quantize_dequantize(x, spec, key=key, axis=axis, tile_axis=tile_axis)


@_fake_quant_ste.defjvp
def _fake_quant_ste_jvp(spec, axis, tile_axis, primals, tangents):
    x, key = primals
    return _fake_quant_ste(x, spec, key, axis, tile_axis), tangents[0]


def fake_quant(x: jax.Array, spec: QuantSpec, *, key: jax.Array | None = None, axis: int = -1,
               tile_axis: int | None = None) -> jax.Array:
    """Quantize then dequantize: same shape and dtype as x; gradient is straight-through (identity)."""
    _check(spec, key, "fake_quant")
    x = jnp.asarray(x)
    _layout(x.shape, spec, axis, tile_axis)  # shape errors at the boundary
    return _fake_quant_ste(x, spec, key, axis, tile_axis)
