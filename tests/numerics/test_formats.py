"""Format catalogue: limits against numerics.md §1 and ml_dtypes, name parsing, errors."""
import ml_dtypes
import numpy as np
import pytest

from lowprec.numerics.formats import FloatFormat, IntFormat, get_format


@pytest.mark.parametrize("name,max_value,min_normal,min_sub,emax", [
    ("e4m3", 448, 2**-6, 2**-9, 8), ("e5m2", 57344, 2**-14, 2**-16, 15), ("e2m3", 7.5, 1, 0.125, 2),
    ("e3m2", 28, 0.25, 0.0625, 4), ("e2m1", 6, 1, 0.5, 2), ("fp16", 65504, 2**-14, 2**-24, 15),
    ("ue4m3", 448, 2**-6, 2**-9, 8), ("ue5m3", 114688, 2**-14, 2**-17, 16),
])
def test_float_limits(name, max_value, min_normal, min_sub, emax):
    f = get_format(name)
    assert (f.max_value, f.min_normal, f.min_subnormal, f.emax) == (max_value, min_normal, min_sub, emax)


@pytest.mark.parametrize("name,dtype,storage", [
    ("e4m3", ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2),
    # XLA has no float6 type: FP6 codes are stored exactly in the 8-bit format that contains them
    ("e2m3", ml_dtypes.float6_e2m3fn, ml_dtypes.float8_e4m3fn), ("e3m2", ml_dtypes.float6_e3m2fn, ml_dtypes.float8_e5m2),
    ("e2m1", ml_dtypes.float4_e2m1fn, ml_dtypes.float4_e2m1fn), ("bf16", ml_dtypes.bfloat16, ml_dtypes.bfloat16),
])
def test_max_matches_ml_dtypes_and_storage(name, dtype, storage):
    f = get_format(name)
    assert f.max_value == float(ml_dtypes.finfo(dtype).max)
    assert np.dtype(f.storage_dtype) == np.dtype(storage)


def test_generic_names_equal_presets_and_fallback_storage():
    assert get_format("e4m3fn") == get_format("e4m3")
    assert get_format("e5m2ieee") == get_format("e5m2")
    assert get_format("e2m1") == FloatFormat(exp_bits=2, man_bits=1)
    e3m4 = get_format("e3m4")
    assert e3m4.max_value == 2**4 * (2 - 2**-4) and np.dtype(e3m4.storage_dtype) == np.dtype(ml_dtypes.bfloat16)
    assert np.dtype(get_format("e6m9").storage_dtype) == np.dtype(np.float32)
    assert not get_format("e4m3fn_nosub").subnormals
    # qtorch-style E4M3 with no specials reaches 480.
    assert get_format("e4m3nosuffix".replace("nosuffix", "")).max_value == 448
    assert FloatFormat(exp_bits=4, man_bits=3).max_value == 480


def test_int_formats():
    assert (get_format("int8").qmin, get_format("int8").qmax) == (-127, 127)
    assert (get_format("int4_full").qmin, get_format("int4_full").qmax) == (-8, 7)
    assert get_format("mxint8").max_value == 1.984375 and get_format("mxint8").emax == 0
    assert get_format("int4_centered").qmax == 7.5
    assert IntFormat(bits=2).qmax == 1


@pytest.mark.parametrize("bad,match", [
    ("e9m1", "exp_bits"), ("e4m11", "man_bits"), ("fp5", "unknown number format"), ("int9", "unknown"),
])
def test_bad_names(bad, match):
    with pytest.raises(ValueError, match=match):
        get_format(bad)


def test_bad_fields():
    with pytest.raises(ValueError, match="specials"):
        FloatFormat(exp_bits=4, man_bits=3, specials="nan")
    with pytest.raises(ValueError, match="bits"):
        IntFormat(bits=1)
