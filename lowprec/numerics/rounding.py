"""Rounding float32 values onto a format's value set, with saturation, in exact arithmetic.

Every value is mapped to an integer grid k = |x|·2^(M-e) (e = the value's binade, clamped to the
format's smallest normal binade so subnormals share one grid), k is rounded to an integer by the
chosen mode, and the result is scaled back. Multiplying by powers of two is exact, so the only
rounding is the one the mode asks for. Exponents come from the float32 exponent bits (`frexp` where
subnormals matter), never from floor(log2(x)).

Hardware note: XLA:CPU flushes float32 subnormals to zero, so inputs below 2^-126 act as zero and
formats with 8 exponent bits (bf16, e8mY) lose their subnormals there. On an H100 (JAX 0.11.2) a
quantizer kept them (an MXFP8 block of 1e-39 gave 1.01e-39, 2026-11-23): do not rely on either.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lowprec.numerics.formats import FloatFormat, Format, IntFormat

ROUNDING_MODES = ("rne", "sr", "half_away", "toward_zero", "ties_down")
FP8_DTYPES = (jnp.dtype(jnp.float8_e4m3fn), jnp.dtype(jnp.float8_e5m2))
FLT_MAX = float(np.finfo(np.float32).max)


def exp2i(n: jax.Array) -> jax.Array:
    """2^n as float32 built from exponent bits, for integer n in [-126, 127]."""
    n = jnp.asarray(n, jnp.int32)
    return lax.bitcast_convert_type((n + 127) << 23, jnp.float32)


def scale_by_pow2(x: jax.Array, n: jax.Array, n_range: tuple[int, int] = (-252, 252)) -> jax.Array:
    """x·2^n exactly, for integer n within the static n_range (|n| up to 252): one factor when the
    range allows it, else two so neither factor leaves the normal range."""
    if -126 <= n_range[0] and n_range[1] <= 127:
        return x * exp2i(n)
    half = n >> 1  # floor(n / 2) with one arithmetic shift
    return x * exp2i(half) * exp2i(n - half)


def floor_log2(x: jax.Array) -> jax.Array:
    """floor(log2 x) for positive normal float32 x, exact (7.9999995 -> 2, not 3)."""
    return jnp.frexp(x)[1] - 1


def ceil_log2(x: jax.Array) -> jax.Array:
    """ceil(log2 x) for positive normal float32 x, exact."""
    mant, exp = jnp.frexp(x)
    return jnp.where(mant == 0.5, exp - 1, exp)


def div_rn(a: jax.Array, b: jax.Array) -> jax.Array:
    """a / b in float32, correctly rounded (RNE) on every backend.

    XLA on NVIDIA GPUs lowers float32 division to PTX `div.full.f32`, which is off by one ulp for
    ~23% of quotients (openxla/xla#37181; measured 29% on an H200, 2026-11-23), so a scale chain
    built from `/` gave different codes on GPU and CPU. Here the hardware quotient of the two
    significands is only an estimate: its exact remainder, computed in integers, steps it to the
    correctly rounded one (~40 ops). Zeros, infinities, NaNs, subnormal operands and quotients
    outside the normal range take the plain division, whose results there are exact (or flushed)
    on both backends.
    """
    return _div_rn(a, b, jnp.divide)


def _div_rn(a: jax.Array, b: jax.Array, estimate) -> jax.Array:
    """div_rn with the significand quotient x/y (x, y in [1, 2)) estimated by `estimate`, which may
    be off by up to ~100 ulps; exposed so tests can exercise the correction on exact backends."""
    a, b = jnp.broadcast_arrays(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    ua, ub = (lax.bitcast_convert_type(v, jnp.uint32) for v in (a, b))
    ea, eb = (((u >> 23) & 0xFF).astype(jnp.int32) for u in (ua, ub))
    fa, fb = ua & 0x7FFFFF, ub & 0x7FFFFF
    ma, mb = fa | 0x800000, fb | 0x800000  # significands, 24 bits
    short = ma < mb  # the quotient's significand Q = ma·2^shift / mb lies in [2^23, 2^24)
    shift = jnp.where(short, 24, 23)
    e = ea - eb + 126 + jnp.where(short, 0, 1)  # biased exponent of the quotient
    xa, xb = (lax.bitcast_convert_type(f | (127 << 23), jnp.float32) for f in (fa, fb))
    q = (estimate(xa, xb) * exp2i(shift)).astype(jnp.uint32)
    # ma·2^shift - q·mb taken mod 2^32 is the exact remainder: it is small (|Q - q|·mb < 2^31).
    r = lax.bitcast_convert_type((ma << shift.astype(jnp.uint32)) - q * mb, jnp.int32)
    mbi = mb.astype(jnp.int32)
    # coarse step, to within one of the exact one (floor(+1/2), not round: Triton kernels call this too)
    d = jnp.floor(r.astype(jnp.float32) / mbi.astype(jnp.float32) + 0.5).astype(jnp.int32)
    qi, r = q.astype(jnp.int32) + d, r - d * mbi  # now |r| <= mb/2 up to the estimate's slop
    odd = (qi & 1) == 1  # one exact RNE step: |2r| against mb, ties to the even significand
    up = (2 * r > mbi) | ((2 * r == mbi) & odd)
    down = (2 * r < -mbi) | ((2 * r == -mbi) & odd)
    qi = qi + up.astype(jnp.int32) - down.astype(jnp.int32)
    bits = ((e - 1) << 23) + qi  # q = 2^24 (rounded up) carries into the exponent
    ok = (ea > 0) & (ea < 255) & (eb > 0) & (eb < 255) & (e >= 1) & (e <= 254)  # a carry to 255 is inf
    sign = lax.bitcast_convert_type((ua ^ ub) & jnp.uint32(0x80000000), jnp.int32)
    return jnp.where(ok, lax.bitcast_convert_type(bits | sign, jnp.float32), a / b)


def _binade(ax: jax.Array) -> jax.Array:
    """floor(log2 ax) from the exponent bits of non-negative finite float32 ax: exact for normal
    values, -127 for zero and subnormals (callers clamp to a format's emin >= -126 first)."""
    return (lax.bitcast_convert_type(ax, jnp.int32) >> 23) - 127


def _lowbias32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with good avalanche (Wellons' lowbias32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform [0, 1) float32 with 24 random bits per element, a pure function of (key, index).

    64 seed bits come from the jax.random key; each element hashes its flat index with them
    (counter-based, like Philox in TE's SR kernels). Per-element threefry cost ~3 s of XLA compile
    per stochastically rounded GEMM on CPU and is compute-bound on GPU; this is neither.
    """
    n = 1
    for d in shape:
        n *= d
    return uniform_at(seed_words(key), lax.iota(jnp.uint32, n).reshape(shape))


def seed_words(key: jax.Array) -> jax.Array:
    """The 64 seed bits (uint32 [2]) that `uniform` hashes each element's index with."""
    return jax.random.bits(key, (2,), jnp.uint32)


def uniform_at(seed: jax.Array, idx: jax.Array) -> jax.Array:
    """`uniform`'s draws at the uint32 flat indices idx: a pure function of (seed, index), so a
    kernel that sees one tile of a tensor draws exactly what `uniform` gives there."""
    h = _lowbias32(_lowbias32(idx ^ seed[0]) ^ seed[1])
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def round_integer(k: jax.Array, mode: str, key: jax.Array | None = None, odd: jax.Array | None = None,
                  draws: jax.Array | None = None, *, portable: bool = False) -> jax.Array:
    """Round non-negative float32 k (< 2^31) to an integer-valued float32 with the given mode.

    `odd` overrides which floors count as odd for ties-to-even (the code's last bit, when the grid
    index is not the code, as in formats without mantissa bits). `draws`: stochastic rounding's
    uniforms for k instead of `uniform(key, k.shape)` (a kernel that sees one tile of a tensor).
    portable: only operations every kernel backend lowers (Triton has no `round`); same values.
    """
    if mode == "rne" and odd is None and not portable:  # one instruction on GPUs (cvt.rni)
        return lax.round(k, lax.RoundingMethod.TO_NEAREST_EVEN)
    floor = jnp.floor(k)
    frac = k - floor  # exact for the magnitudes used here (k < 2^12)
    if mode == "rne" and odd is None:  # the floor's parity from its integer (fmod parity was a loop)
        odd = (floor.astype(jnp.int32) & 1) == 1
    if mode == "rne":
        up = (frac > 0.5) | ((frac == 0.5) & odd)
    elif mode == "half_away":
        up = frac >= 0.5
    elif mode == "ties_down":
        up = frac > 0.5
    elif mode == "toward_zero":
        return floor
    elif mode == "sr":
        if key is None and draws is None:
            raise ValueError("rounding='sr' needs an explicit jax.random key (key=...)")
        # P(up) = frac; 24 random bits, so the bias is below 2^-24 of a step.
        up = (uniform(key, k.shape) if draws is None else draws) < frac
    else:
        raise ValueError(f"unknown rounding mode {mode!r}; choose from {ROUNDING_MODES}")
    return floor + up.astype(jnp.float32)


def _round_float(x: jax.Array, fmt: FloatFormat, mode: str, key, draws=None, portable=False) -> jax.Array:
    ax = jnp.abs(x)
    e = _binade(ax)  # below emin only the clamped grid matters, so zero/subnormals may read -127
    if fmt.subnormals:
        e_eff, mbits = jnp.maximum(e, fmt.emin), fmt.man_bits
        shift = mbits - e_eff
        shifts = (mbits - 127, mbits - fmt.emin)
    else:  # below the smallest normal the grid is {0, min_normal}
        below = e < fmt.emin
        shift = jnp.where(below, -fmt.emin, fmt.man_bits - e)
        shifts = (min(-fmt.emin, fmt.man_bits - 127), max(-fmt.emin, fmt.man_bits - fmt.emin))
    k = scale_by_pow2(ax, shift, shifts)
    odd = None
    if fmt.man_bits == 0:  # one value per binade: its code's last bit is the biased exponent's
        odd = (k >= 1.0) & ((e + fmt.bias) % 2 == 1)
    r = round_integer(k, mode, key, odd, draws, portable=portable)
    # Formats wider than float32 (e8m3, ...) never saturate a float32: cap the constant, not inf.
    y = jnp.minimum(scale_by_pow2(r, -shift, (-shifts[1], -shifts[0])), min(fmt.max_value, FLT_MAX))
    return _with_sign_of(y, x) if portable else jnp.copysign(y, x)


def _with_sign_of(mag: jax.Array, x: jax.Array) -> jax.Array:
    """mag (>= 0, float32) with x's sign bit: copysign by bits, for Triton kernels (`portable`), which
    compute jnp.copysign's -|y| as 0 - |y| and so turn -0 into +0. (XLA keeps copysign: on an H100
    this form cost plain MXFP4's GEMM fwd+bwd 13%, 3.09 -> 3.50 ms, 2026-11-23.)"""
    sign = lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0x80000000)
    return lax.bitcast_convert_type(lax.bitcast_convert_type(mag, jnp.uint32) | sign, jnp.float32)


def _round_int(x: jax.Array, fmt: IntFormat, mode: str, key, draws=None, portable=False) -> jax.Array:
    k = x * (2.0**fmt.frac_bits)
    if fmt.centered:  # levels at half-integers: round k - 1/2 on the integer grid
        k = k - 0.5
    mag = round_integer(jnp.abs(k), mode, key, draws=draws, portable=portable)
    r = _with_sign_of(mag, k) if portable else jnp.copysign(mag, k)
    if fmt.centered:
        r = r + 0.5
    return jnp.clip(r, fmt.qmin, fmt.qmax) * (2.0**-fmt.frac_bits)


def cast_round_trip(x: jax.Array, dtype) -> jax.Array:
    """float32 x rounded to `dtype` (its cast's RNE) and back to float32. The barrier keeps the cast:
    with excess precision allowed (its default on GPUs) XLA deletes chains of float converts, so a
    bare `x.astype(dtype).astype(float32)` returned x unrounded there (E2M1 codes, 2026-11-23, H100)."""
    return lax.optimization_barrier(x.astype(dtype)).astype(jnp.float32)


def round_to_format(x: jax.Array, fmt: Format, mode: str = "rne", key: jax.Array | None = None, *,
                    portable: bool = False) -> jax.Array:
    """Round x onto `fmt`'s values (float32 out), saturating at ±max; NaN and ±inf give NaN.
    portable: as in round_finite."""
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; choose from {ROUNDING_MODES}")
    if mode == "sr" and key is None:
        raise ValueError("rounding='sr' needs an explicit jax.random key (key=...)")
    x = jnp.asarray(x).astype(jnp.float32)
    return jnp.where(jnp.isfinite(x), round_finite(x, fmt, mode, key, portable=portable), jnp.nan)


def round_finite(x: jax.Array, fmt: Format, mode: str = "rne", key: jax.Array | None = None, *,
                 draws: jax.Array | None = None, portable: bool = False) -> jax.Array:
    """round_to_format for float32 x known to be finite (values elsewhere are unspecified): no
    element-wise NaN/inf test, so a quantizer that masks non-finite groups itself fuses better.
    draws: as in round_integer. portable: the same bits by arithmetic that a Pallas (Triton) kernel
    lowers faithfully: no `round`, no FP8 cast behind an optimization barrier, signs set by bits."""
    if mode == "rne" and not portable and isinstance(fmt, FloatFormat) and fmt.native_dtype in FP8_DTYPES:
        # The hardware's saturating FP8 cast is RNE onto exactly this value set: one instruction
        # instead of the integer-grid arithmetic (the exhaustive tests hold both to ml_dtypes).
        # E2M1 has no cast instruction before Blackwell, and the barrier made XLA write its codes
        # out; the arithmetic fuses (0.28 vs 0.51 ms for 16384x5632 on an H200, 2026-11-23).
        return cast_round_trip(jnp.clip(x, -fmt.max_value, fmt.max_value), fmt.native_dtype)
    if isinstance(fmt, FloatFormat):
        return _round_float(x, fmt, mode, key, draws, portable)
    return _round_int(x, fmt, mode, key, draws, portable)
