"""Rounding onto formats: exhaustive bf16 sweeps against ml_dtypes and an enumerated value table,
golden vectors from numerics.md §4, and statistical tests of stochastic rounding (§5)."""
import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from lowprec.numerics.formats import FloatFormat, get_format
from lowprec.numerics.rounding import ceil_log2, div_rn, floor_log2, round_to_format

ALL_BF16 = np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
NORMAL_F32 = 2.0**-126  # XLA flushes float32 subnormals (see rounding.py)


def ml_dtypes_reference(x, dtype, max_value):
    """Independent oracle: explicit saturation, then ml_dtypes' RNE cast; non-finite -> NaN."""
    with np.errstate(invalid="ignore"):
        y = np.clip(x, -max_value, max_value).astype(dtype).astype(np.float32)
    return np.where(np.isfinite(x), y, np.nan)


def assert_same_values(got, want, where=None):
    got, want = np.asarray(got), np.asarray(want)
    if where is not None:
        got, want = got[where], want[where]
    bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not bad.any(), f"{bad.sum()} mismatches, e.g. in={np.flatnonzero(bad)[:5]} got={got[bad][:5]} want={want[bad][:5]}"


@pytest.mark.parametrize("name,dtype", [
    ("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2), ("e2m3", ml_dtypes.float6_e2m3fn),
    ("e3m2", ml_dtypes.float6_e3m2fn), ("e2m1", ml_dtypes.float4_e2m1fn), ("fp16", np.float16),
    ("bf16", ml_dtypes.bfloat16),
])
def test_exhaustive_bf16_patterns_vs_ml_dtypes(name, dtype):
    fmt = get_format(name)
    got = jax.jit(lambda x: round_to_format(x, fmt, "rne"))(ALL_BF16)
    want = ml_dtypes_reference(ALL_BF16, dtype, fmt.max_value)
    # bf16's own subnormals are float32 subnormals, which XLA:CPU flushes to zero (GPUs keep them).
    keep = np.abs(ALL_BF16) >= NORMAL_F32 if name == "bf16" else None
    assert_same_values(got, want, keep)
    if name == "bf16":
        tiny = np.abs(ALL_BF16) < NORMAL_F32
        flushed = jax.default_backend() == "cpu"
        assert_same_values(np.asarray(got)[tiny], np.where(flushed, 0.0, want[tiny]))


def value_table(fmt: FloatFormat):
    """Non-negative finite values of a float format decoded from every code (float64), with each
    value's code parity (the last bit of e_code·2^M + m_code), sorted by value."""
    vals = {}
    for e_code, m_code in itertools.product(range(2**fmt.exp_bits), range(2**fmt.man_bits)):
        top = e_code == 2**fmt.exp_bits - 1
        if fmt.specials == "ieee" and top:
            continue
        if fmt.specials == "fn" and top and m_code == 2**fmt.man_bits - 1:
            continue
        if e_code == 0:
            v = m_code * 2.0 ** (1 - fmt.bias - fmt.man_bits) if fmt.subnormals else (0.0 if m_code == 0 else None)
        else:
            v = (1 + m_code / 2**fmt.man_bits) * 2.0 ** (e_code - fmt.bias)
        if v is not None and v not in vals:
            vals[v] = ((e_code << fmt.man_bits) | m_code) & 1
    table = np.array(sorted(vals))
    return table, np.array([vals[v] for v in table])


def table_rne(x, table, parity):
    """Nearest table value, ties to the value whose code has an even last bit, saturating."""
    with np.errstate(invalid="ignore"):
        ax = np.nan_to_num(np.abs(x.astype(np.float64)), posinf=0.0)
    hi = np.clip(np.searchsorted(table, ax), 1, len(table) - 1)
    lo = hi - 1
    dlo, dhi = ax - table[lo], table[hi] - ax
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(parity[lo] == 0, lo, hi)))
    y = np.where(ax >= table[-1], table[-1], table[pick])
    return np.where(np.isfinite(x), np.copysign(y, np.nan_to_num(x)), np.nan).astype(np.float32)


@pytest.mark.parametrize("spec", ["e3m4", "e4m3fn", "e5m2ieee", "e2m1", "e1m2", "e5m6", "e6m1", "e3m0", "e4m3fn_nosub", "e2m2_nosub", "e7m3"])
def test_generic_exmy_exhaustive_vs_value_table(spec):
    fmt = get_format(spec)
    table, parity = value_table(fmt)
    assert table[-1] == fmt.max_value
    got = jax.jit(lambda x: round_to_format(x, fmt, "rne"))(ALL_BF16)
    want = table_rne(ALL_BF16, table, parity)
    keep = np.abs(ALL_BF16) >= NORMAL_F32
    assert_same_values(got, want, keep)


def test_e2m1_golden_ties():
    x = jnp.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 5.5, 6.5, 100, -2.5, -0.25])
    e2m1 = get_format("e2m1")
    assert_same_values(round_to_format(x, e2m1, "rne"), [0, 1, 1, 2, 2, 4, 4, 6, 6, 6, -2, -0.0])
    assert_same_values(round_to_format(x, e2m1, "ties_down"), [0, 0.5, 1, 1.5, 2, 3, 4, 6, 6, 6, -2, -0.0])
    assert np.signbit(np.asarray(round_to_format(x, e2m1))[-1])


def test_cast_golden_vectors():
    assert_same_values(round_to_format(jnp.array([464.0, 470, 432, 400]), get_format("e4m3")), [448, 448, 448, 384])
    assert_same_values(round_to_format(jnp.array([60000.0, 61440, 1e9]), get_format("e5m2")), [57344, 57344, 57344])
    assert_same_values(round_to_format(jnp.array([np.nan, np.inf, -np.inf]), get_format("e4m3")), [np.nan] * 3)


def test_other_modes():
    e2m1 = get_format("e2m1")
    x = jnp.array([0.75, 1.25, 2.5, 5.0, -0.75, 5.9])
    assert_same_values(round_to_format(x, e2m1, "half_away"), [1, 1.5, 3, 6, -1, 6])
    assert_same_values(round_to_format(x, e2m1, "toward_zero"), [0.5, 1, 2, 4, -0.5, 4])


def test_exponent_extraction_just_below_powers_of_two():
    x = jnp.array([7.9999995, 255.99998, 8.0, 1.0, 0.75], jnp.float32)
    assert np.floor(np.log2(np.float32(7.9999995))) == 3  # the fp32 trap the spec warns about
    assert list(np.asarray(floor_log2(x))) == [2, 7, 3, 0, -1]
    assert list(np.asarray(ceil_log2(x))) == [3, 8, 3, 0, 0]


def test_int_rounding():
    int4 = get_format("int4")
    x = jnp.array([0.5, 1.5, -2.5, 7.6, -9.0, 3.49])
    assert_same_values(round_to_format(x, int4), [0, 2, -2, 7, -7, 3])
    assert_same_values(round_to_format(x, get_format("int4_full")), [0, 2, -2, 7, -8, 3])
    assert_same_values(round_to_format(jnp.array([0.2, -0.2, 9.0, 1.0]), get_format("int4_centered")), [0.5, -0.5, 7.5, 0.5])
    assert_same_values(round_to_format(jnp.array([1.0, 3.0, -0.5 / 64]), get_format("mxint8")), [1.0, 1.984375, -0.0])


# ---- stochastic rounding (numerics.md §5) ----
SR_FORMATS = ["e2m1", "e4m3", "int4"]


def neighbours(x, name):
    """(lo, hi): the grid values around |x| from the enumerated table, signs restored (numpy)."""
    table = np.arange(8.0) if name == "int4" else value_table(get_format(name))[0]
    ax = np.abs(np.asarray(x, np.float64))
    hi_idx = np.clip(np.searchsorted(table, ax, side="left"), 0, len(table) - 1)
    lo_idx = np.where(table[hi_idx] == ax, hi_idx, hi_idx - 1)
    return np.copysign(table[lo_idx], x), np.copysign(table[hi_idx], x)


@pytest.mark.parametrize("name", SR_FORMATS)
def test_sr_support_and_unbiased(name):
    fmt = get_format(name)
    x = jax.random.uniform(jax.random.key(1), (512,), minval=-fmt.max_value * 0.9, maxval=fmt.max_value * 0.9)
    keys = jax.random.split(jax.random.key(2), 2000)
    draws = jax.vmap(lambda k: round_to_format(x, fmt, "sr", k))(keys)
    lo, hi = neighbours(x, name)
    draws = np.asarray(draws)
    # support: every draw is one of the two neighbours
    assert np.all((draws == lo) | (draws == hi))
    # unbiased: |mean - x| within 5 standard errors of a Bernoulli over one step
    err = np.abs(draws.mean(0) - np.asarray(x))
    assert np.all(err <= 5 * np.abs(hi - lo) * 0.5 / np.sqrt(len(keys)) + 1e-6)


@pytest.mark.parametrize("name", SR_FORMATS)
def test_sr_mean_of_50_beats_rne_and_keys(name):
    fmt = get_format(name)
    x = jax.random.uniform(jax.random.key(3), (4096,), minval=-fmt.max_value * 0.8, maxval=fmt.max_value * 0.8)
    rn = round_to_format(x, fmt, "rne")
    draws = jax.vmap(lambda k: round_to_format(x, fmt, "sr", k))(jax.random.split(jax.random.key(4), 50))
    rmse = lambda y: float(jnp.sqrt(jnp.mean((y - x) ** 2)))
    assert rmse(draws.mean(0)) < rmse(rn)
    a = round_to_format(x, fmt, "sr", jax.random.key(7))
    b = jax.jit(lambda v, k: round_to_format(v, fmt, "sr", k))(x, jax.random.key(7))
    c = round_to_format(x, fmt, "sr", jax.random.key(8))
    assert_same_values(a, b)  # same key, eager == jit
    assert int(jnp.sum(a != c)) >= 256  # different keys really differ
    representable = round_to_format(x, fmt, "rne")
    assert_same_values(round_to_format(representable, fmt, "sr", jax.random.key(9)), representable)


def test_sr_probabilities_match_position_in_bin():
    e2m1 = get_format("e2m1")
    x = jnp.full((20000,), 2.25)  # a quarter of the way from 2 to 3
    draws = round_to_format(x, e2m1, "sr", jax.random.key(0))
    p_up = float(jnp.mean(draws == 3.0))
    assert abs(p_up - 0.25) < 4 * np.sqrt(0.25 * 0.75 / x.size)
    # no bias from flushing below the smallest subnormal: 0.125 between 0 and 0.5
    tiny = round_to_format(jnp.full((20000,), 0.125), e2m1, "sr", jax.random.key(1))
    assert abs(float(tiny.mean()) - 0.125) < 4 * 0.5 * np.sqrt(0.25 * 0.75 / 20000)


def test_sr_needs_key_and_bad_mode():
    with pytest.raises(ValueError, match="key"):
        round_to_format(jnp.ones(3), get_format("e2m1"), "sr")
    with pytest.raises(ValueError, match="rounding mode"):
        round_to_format(jnp.ones(3), get_format("e2m1"), "nearest")


def test_sr_uniform_source_statistics():
    from lowprec.numerics.rounding import uniform

    u = np.asarray(uniform(jax.random.key(0), (1000, 1000)), np.float64).ravel()
    n = u.size
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 0.001
    counts = np.histogram(u, bins=256, range=(0, 1))[0]
    chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum()
    assert chi2 < 255 + 6 * np.sqrt(2 * 255)  # 255 dof, ~6 sigma
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(n)  # neighbours uncorrelated
    rows = u.reshape(1000, 1000)
    assert abs(np.corrcoef(rows[:, 0], rows[:, 1])[0, 1]) < 5 / np.sqrt(1000)
    other = np.asarray(uniform(jax.random.key(1), (1000, 1000))).ravel()
    assert abs(np.corrcoef(u, other)[0, 1]) < 5 / np.sqrt(n)  # keys give independent streams


@pytest.mark.parametrize("name,dtype", [
    ("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2), ("e2m1", ml_dtypes.float4_e2m1fn),
    ("fp16", np.float16),
])
def test_integer_grid_path_equals_native_casts_exhaustively(name, dtype):
    """RNE onto native formats takes the hardware cast; the generic integer-grid arithmetic (used for
    every other format and mode) must give the same bits on the same formats."""
    from lowprec.numerics.rounding import _round_float

    fmt = get_format(name)
    got = jax.jit(lambda x: jnp.where(jnp.isfinite(x), _round_float(x, fmt, "rne", None), jnp.nan))(ALL_BF16)
    assert_same_values(got, ml_dtypes_reference(ALL_BF16, dtype, fmt.max_value))


@pytest.mark.parametrize("name,dtype", [
    ("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2), ("e2m1", ml_dtypes.float4_e2m1fn),
    ("int4", None), ("int8", None),
])
def test_portable_rounding_is_rne_exhaustively(name, dtype):
    """portable=True (the arithmetic Pallas kernels lower: no `round`, no FP8 cast held by a barrier)
    rounds every bf16 pattern to nearest even, as the native paths do."""
    fmt = get_format(name)
    got = np.asarray(jax.jit(lambda x: round_to_format(x, fmt, "rne", portable=True))(ALL_BF16))
    if dtype is not None:
        want = ml_dtypes_reference(ALL_BF16, dtype, fmt.max_value)
    else:  # numpy's round is ties-to-even; symmetric integer grids saturate at ±qmax
        with np.errstate(invalid="ignore"):
            want = np.where(np.isfinite(ALL_BF16), np.clip(np.round(ALL_BF16), fmt.qmin, fmt.qmax), np.nan)
    assert_same_values(got, want, np.abs(ALL_BF16) >= NORMAL_F32)
    assert_same_values(got, np.asarray(jax.jit(lambda x: round_to_format(x, fmt, "rne"))(ALL_BF16)))


def _division_cases(seed):
    """Random float32 pairs over 2^±60, exact quotients of small integers, and the special values."""
    rng = np.random.default_rng(seed)
    n = 1 << 18
    a = rng.standard_normal(n) * np.exp2(rng.integers(-60, 60, n))
    b = rng.standard_normal(n) * np.exp2(rng.integers(-60, 60, n))
    p, d = rng.integers(1, 1 << 12, (2, n))  # (p·d)/d == p exactly: a faithful division may miss it
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -7.0, 2688.0, 3e38, 2e-38])
    sa, sb = np.meshgrid(special, special)
    return [np.concatenate(v).astype(np.float32) for v in ((a, p * d, sa.ravel()), (b, d, sb.ravel()))]


def _assert_ieee_quotients(a, b, got):
    with np.errstate(all="ignore"):
        want = a / b
    normal = ~((np.abs(want) < np.finfo(np.float32).tiny) & (want != 0))  # XLA flushes subnormals
    same = (got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want))
    assert same[normal].all(), (a[normal & ~same][:4], b[normal & ~same][:4], got[normal & ~same][:4])


def test_div_rn_is_ieee_division():
    a, b = _division_cases(0)
    _assert_ieee_quotients(a, b, np.asarray(jax.jit(div_rn)(a, b)))


@pytest.mark.parametrize("max_off", [2, 40])
def test_div_rn_corrects_an_inexact_estimate(max_off):
    """On CPU the hardware quotient is exact, so the correction step would never run: feed it
    estimates off by up to max_off ulps (GPUs miss by <= 2; 40 exercises the coarse step)."""
    from lowprec.numerics.rounding import _div_rn

    a, b = _division_cases(2)
    off = np.random.default_rng(3).integers(-max_off, max_off + 1, a.shape).astype(np.int32)

    def estimate(x, y):
        return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x / y, jnp.int32) + off, jnp.float32)

    _assert_ieee_quotients(a, b, np.asarray(jax.jit(lambda a, b: _div_rn(a, b, estimate))(a, b)))


@pytest.mark.gpu
def test_div_rn_is_ieee_division_on_gpu():
    """XLA's own float32 `/` on an H200 missed 29% of these (div.full.f32, 2026-11-23)."""
    a, b = _division_cases(1)
    gpu = jax.devices("gpu")[0]
    _assert_ieee_quotients(a, b, np.asarray(jax.jit(div_rn)(jax.device_put(a, gpu), jax.device_put(b, gpu))))
