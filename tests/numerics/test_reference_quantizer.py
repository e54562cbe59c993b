"""The quantizer against an independent NumPy reference (IEEE float32 arithmetic + ml_dtypes casts),
bit for bit on random data, for every deterministic preset; on a GPU the same comparison runs there.

The reference spells out each scale chain from its paper or kernel (reference/recipes.md) with
NumPy's correctly rounded float32 division, so a backend whose division is not IEEE (XLA on NVIDIA
GPUs) shows up here as differing codes.
"""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import dequantize, quantize

F32 = np.float32
ELEMENTS = {  # element name -> (ml_dtypes dtype, or an integer qmax)
    "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e2m1": ml_dtypes.float4_e2m1fn,
    "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn, "int8": 127, "int4": 7,
}
PRESETS = ["fp8_e4m3_tensor", "fp8_e5m2_tensor", "fp8_e4m3_tensor_pow2", "fp8_e4m3_row", "fp8_block128",
           "fp8_tile128", "mxfp8", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "nvfp4", "nvfp4_tile16",
           "nvint4", "int8_channel", "int4_g128"]


def _max(element):
    kind = ELEMENTS[element.name]
    return F32(kind) if isinstance(kind, int) else F32(ml_dtypes.finfo(kind).max)


def _round(v, element):
    """RNE onto the element's values, saturating (float32 in and out)."""
    kind, m = ELEMENTS[element.name], _max(element)
    if isinstance(kind, int):
        return np.clip(np.round(v), -m, m).astype(F32) + F32(0)  # half-to-even; integers have no -0
    return np.clip(v, -m, m).astype(kind).astype(F32)


def _grouped(x, spec):
    """x [R, K] viewed so that each scale group is reduced over the returned axes."""
    r, k, b = *x.shape, spec.block
    shape = {"tensor": (1, r, 1, k), "channel": (r, 1, 1, k), "block": (r, 1, k // max(b, 1), b),
             "tile": (r // max(b, 1), b, k // max(b, 1), b)}[spec.granularity]
    return x.reshape(shape), (1, 3)


def _pow2(e):
    return np.ldexp(F32(1), np.clip(e, -126, 127)).astype(F32)


def _exponent(v):  # floor(log2 v) for positive normal float32, from frexp
    return np.frexp(v)[1] - 1


def reference(x, spec):
    """(codes [R, K], dequantized [R, K]) by the published chain, in NumPy float32."""
    m = _max(spec.element)
    view, axes = _grouped(x, spec)
    amax = np.max(np.abs(view), axis=axes, keepdims=True).astype(F32)
    s_dec = F32(1)
    if spec.two_level:  # NVFP4 (TE kernel): S_enc = m·448/amax_t, s_b = e4m3(amax_b·(S_enc/m))
        t = F32(amax.max())
        s_enc = min(F32(m * F32(448)) / t if t > 0 else F32(1), F32(np.finfo(F32).max))
        s_dec = F32(1) / s_enc
        s = np.minimum(amax * (s_enc * F32(1 / float(m))), F32(448)).astype(ml_dtypes.float8_e4m3fn).astype(F32)
        with np.errstate(divide="ignore"):  # a zero block scale encodes with FLT_MAX
            codes = _round(view * np.minimum(F32(1) / (s * s_dec), np.finfo(F32).max), spec.element)
    elif spec.scale_rule == "absmax":  # s = amax/m, encoded with its reciprocal
        s = np.maximum(amax, F32(spec.amax_eps)) / m
        codes = _round(view * (F32(1) / s), spec.element)
    else:
        safe = np.where(amax > 0, amax, F32(1))
        if spec.scale_rule == "floor":  # OCP: 2^(floor(log2 amax) - emax)
            e = _exponent(safe) - _exponent(m)
        elif spec.scale_rule == "rceil":  # 2^ceil(log2(amax/m))
            q = safe / m
            e = _exponent(q) + (np.frexp(q)[0] != 0.5)
        else:
            raise NotImplementedError(spec.scale_rule)
        s = np.where(amax > 0, _pow2(e), F32(1))
        codes = _round(view / s, spec.element)
    deq = (codes * s).astype(F32) * s_dec
    return codes.reshape(x.shape), deq.reshape(x.shape).astype(F32)


def _data(shape, seed):
    """Random bf16-valued data (the training inputs' precision) with rows spanning 2^±12."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-12, 12, (shape[0], 1)))
    return x.astype(ml_dtypes.bfloat16).astype(F32)


def _compare(spec, x, device=None):
    want_codes, want = reference(x, spec)
    put = jnp.asarray(x) if device is None else jax.device_put(x, device)
    q = jax.jit(lambda v: quantize(v, spec))(put)
    got = jax.jit(lambda q: dequantize(q, jnp.float32))(q)
    np.testing.assert_array_equal(np.asarray(q.data).astype(F32), want_codes)
    np.testing.assert_array_equal(np.asarray(got).view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("name", PRESETS)
def test_quantizer_matches_numpy_reference(name):
    _compare(lowprec.specs.get(name), _data((256, 512), 0))


@pytest.mark.gpu
@pytest.mark.parametrize("name", PRESETS)
def test_quantizer_matches_numpy_reference_on_gpu(name):
    """Two GPU-only rewrites this caught (2026-11-23): under excess precision XLA deleted the
    f32 -> e2m1 -> f32 round trip (codes came out unrounded), and its float32 division is not IEEE
    (openxla/xla#37181; ~0.07% of NVFP4 codes differed until the scale chain used `div_rn`)."""
    _compare(lowprec.specs.get(name), _data((1024, 512), 1), jax.devices("gpu")[0])
