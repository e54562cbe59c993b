"""Scale rules (how a block's statistics become its scale) and scale formats (how a scale is stored).

A scale `s` is a dequantization multiplier: x ≈ code·s. Power-of-two rules build s from exponent
bits; `absmax` divides. Every division here is `div_rn` (correctly rounded on GPUs too), so a
scale is the same float on every backend. Statistics arrive already reduced per group (amax, and
for the QuEST rules the group standard deviation / RMS).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lowprec.numerics.formats import FloatFormat, Format, IntFormat, get_format
from lowprec.numerics.rounding import cast_round_trip, ceil_log2, div_rn, exp2i, floor_log2, round_to_format

SCALE_FORMATS = ("fp32", "bf16", "e8m0", "ue4m3", "ue5m3")
SCALE_RULES = ("absmax", "floor", "ceil", "even", "rceil", "quest_sigma", "quest_rms")
POW2_RULES = ("floor", "ceil", "even", "rceil", "quest_sigma")
SIGMA_RULES = ("quest_sigma", "quest_rms")

# E8M0 holds 2^-127..2^127; the extreme low end is a float32 subnormal, flushed by XLA, so lowprec
# clamps exponents to [-126, 127].
E8M0_MIN_EXP, E8M0_MAX_EXP = -126, 127

# QuEST: the FP4 grid's largest value lands at 2.92247856·sigma (0.48708 = 2.92247856/6 for E2M1).
QUEST_FP_CLIP_SIGMAS = 2.92247856
# QuEST: Gaussian-MSE-optimal clipping in sigmas for b-bit centered uniform grids.
QUEST_INT_ALPHA = {1: 0.798, 2: 1.494, 3: 2.051, 4: 2.514, 8: 3.885}


def _pow2(exponent: jax.Array) -> jax.Array:
    return exp2i(jnp.clip(exponent, E8M0_MIN_EXP, E8M0_MAX_EXP))


def rule_scale(rule: str, fmt: Format, amax: jax.Array, sigma: jax.Array | None, amax_eps: float) -> jax.Array:
    """Float32 scale per group from its statistics. amax = 0 gives scale 1 for power-of-two rules."""
    if rule in SIGMA_RULES:
        return _sigma_scale(rule, fmt, sigma)
    safe = jnp.where(amax > 0, amax, 1.0)
    if rule == "absmax":
        return div_rn(jnp.maximum(amax, amax_eps), fmt.max_value)
    if rule == "floor":  # OCP: amax/s lands in [2^emax, 2^(emax+1)), the top may clip
        exp = floor_log2(safe) - fmt.emax
    elif rule == "ceil":
        exp = ceil_log2(safe) - fmt.emax
    elif rule == "even":  # round amax's mantissa to the element's bits (RNE), then floor
        widened = FloatFormat(exp_bits=8, man_bits=min(fmt.man_bits, 10), specials="ieee")
        exp = floor_log2(round_to_format(safe, widened, "rne")) - fmt.emax
    elif rule == "rceil":  # cuBLAS / MXFP8 recipe: never saturates
        exp = ceil_log2(div_rn(safe, fmt.max_value))
    else:
        raise ValueError(f"unknown scale_rule {rule!r}; choose from {SCALE_RULES}")
    return jnp.where(amax > 0, _pow2(exp), 1.0)


def _sigma_scale(rule: str, fmt: Format, sigma: jax.Array) -> jax.Array:
    """QuEST scales from the group's spread instead of its maximum."""
    if rule == "quest_sigma":  # power of two putting the grid's top near 2.92 sigma
        return _pow2(floor_log2(div_rn(QUEST_FP_CLIP_SIGMAS * sigma, fmt.max_value) + 1e-8))
    if not isinstance(fmt, IntFormat) or fmt.bits not in QUEST_INT_ALPHA:
        raise ValueError(f"scale_rule 'quest_rms' needs an int format with bits in {sorted(QUEST_INT_ALPHA)}")
    step = div_rn(2.0 * QUEST_INT_ALPHA[fmt.bits] * sigma, 2**fmt.bits - 1)  # centered grid over ±alpha·RMS
    return jnp.maximum(step, 1e-30) * 2.0**fmt.frac_bits


def cast_scale(s: jax.Array, scale_format: str, *, portable: bool = False) -> jax.Array:
    """Round a float32 scale onto its storage format (float32 values out). portable: as in
    round_finite, for the UE formats (bf16's cast lowers everywhere, but not its barrier)."""
    if scale_format in ("fp32", "e8m0"):  # e8m0 scales are exact powers of two already
        return s
    if scale_format == "bf16":
        if portable:
            raise ValueError("cast_scale(portable=True) has no arithmetic form for bf16 scales")
        return cast_round_trip(s, jnp.bfloat16)
    if scale_format == "ue4m3":  # for s >= 0 the value set is E4M3's: its native saturating cast
        return round_to_format(s, get_format("e4m3"), "rne", portable=portable)
    if scale_format == "ue5m3":
        return round_to_format(s, get_format(scale_format), "rne", portable=portable)
    raise ValueError(f"unknown scale_format {scale_format!r}; choose from {SCALE_FORMATS}")


def scale_storage_dtype(scale_format: str):
    return {
        "fp32": jnp.float32, "bf16": jnp.bfloat16, "e8m0": jnp.float8_e8m0fnu,
        "ue4m3": jnp.float8_e4m3fn, "ue5m3": jnp.float32,
    }[scale_format]
