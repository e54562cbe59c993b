"""The fused per-tensor FP8 cast: codes in both layouts from one pass, the same bits as `quantize`.

The Pallas kernel runs here in interpret mode (CPU) against an independent reference: a float64
product, explicit saturation and ml_dtypes' RNE cast. On GPUs (marked) it runs compiled.
"""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import lowprec
from lowprec.numerics import fused
from lowprec.numerics.formats import get_format
from lowprec.numerics.quantize import quantize, quantize_pair, transpose_codes

FORMATS = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
POW2 = lowprec.specs.get("fp8_e4m3_tensor_pow2")


def _reference(x, mult, name):
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    if mult[1] == 0:
        codes = np.zeros(x64.shape, FORMATS[name])
    else:
        fmax = float(get_format(name).max_value)
        codes = np.clip(x64 * float(mult[0]), -fmax, fmax).astype(FORMATS[name])
    return codes, np.swapaxes(codes, -1, -2)


def _bits(a):
    return np.asarray(a).view(np.uint8)


def _data(shape, seed=0):
    """Normal values spread over many binades, some beyond the saturation point, signed zeros."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, shape) * 2.0 ** jax.random.randint(k2, shape, -20, 14).astype(jnp.float32)
    return x.astype(jnp.bfloat16).reshape(-1).at[:3].set(jnp.array([0.0, -0.0, 3e38], jnp.bfloat16)).reshape(shape)


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
@pytest.mark.parametrize("shape", [(2, 128, 256), (192, 320), (100, 64)])  # tile 128, tile 64, no tile (XLA)
def test_cast_transpose_matches_reference(name, shape):
    x = _data(shape)
    for mult in (np.array([2.0**-3, 1.0], np.float32), np.array([2.0**7, 1.0], np.float32),
                 np.array([1.0, 0.0], np.float32)):
        q, qt = fused.cast_transpose(x, jnp.asarray(mult), get_format(name), interpret=True)
        ref, ref_t = _reference(x, mult, name)
        assert q.dtype == FORMATS[name] and q.shape == shape and qt.shape == shape[:-2] + shape[-1:] + shape[-2:-1]
        np.testing.assert_array_equal(_bits(q), _bits(ref))
        np.testing.assert_array_equal(_bits(qt), _bits(ref_t))


def test_non_finite_tensor_gives_zero_codes():
    x = jnp.ones((128, 128), jnp.bfloat16).at[5, 7].set(jnp.inf).at[9, 1].set(jnp.nan)
    q, qt = fused.cast_transpose(x, jnp.array([1.0, 0.0]), get_format("e4m3"), interpret=True)
    assert not _bits(q).any() and not _bits(qt).any()


def test_tiles_and_bad_format():
    assert fused.tile((4, 256, 384)) == (128, 8) and fused.tile((192, 64)) == (64, 4)
    assert fused.tile((96, 64)) is None and fused.tile((128,)) is None
    with pytest.raises(ValueError, match="writes E4M3 or E5M2 codes, not format .e2m1."):
        fused.cast_transpose(jnp.ones((64, 64)), jnp.ones((2,)), get_format("e2m1"))


def _assert_same_qarray(a, b):
    np.testing.assert_array_equal(_bits(a.data), _bits(b.data))
    np.testing.assert_array_equal(np.asarray(a.scale), np.asarray(b.scale))
    assert (a.spec, a.layout, a.dtype) == (b.spec, b.layout, b.dtype)


@pytest.mark.parametrize("spec_name", ["fp8_e4m3_tensor_pow2", "fp8_e5m2_tensor_pow2", "fp8_e4m3_tensor"])
@pytest.mark.parametrize("stored_transposed", [False, True])
def test_quantize_pair_equals_quantize_and_transposed_codes(spec_name, stored_transposed):
    spec = lowprec.specs.get(spec_name)
    x = _data((2, 128, 192), seed=1)
    for amax in (None, jnp.float32(50.0)):  # the tensor's own amax, or a recorded (delayed) one
        q, qt = jax.jit(lambda v, a: quantize_pair(v, spec, amax=a, stored_transposed=stored_transposed))(x, amax)
        ref = quantize(x, spec, amax=amax)
        _assert_same_qarray(q, ref)
        _assert_same_qarray(qt, transpose_codes(ref))


def test_quantize_pair_refuses_layout_dependent_specs():
    with pytest.raises(ValueError, match="per-tensor spec with deterministic rounding"):
        quantize_pair(jnp.ones((64, 64)), lowprec.specs.get("fp8_e4m3_row"))
    with pytest.raises(ValueError, match="per-tensor spec with deterministic rounding"):
        quantize_pair(jnp.ones((64, 64)), POW2.replace(rounding="sr"))


@pytest.mark.gpu
def test_quantize_pair_runs_the_kernel_on_gpu():
    for spec in (POW2, lowprec.specs.get("fp8_e5m2_tensor_pow2")):
        x = _data((1, 1024, 768), seed=2)
        fn = jax.jit(lambda v: quantize_pair(v, spec, stored_transposed=True))
        assert fn.lower(x).compile().as_text().count("__gpu$xla.gpu.triton") == 1
        q, qt = fn(x)
        ref = quantize(x, spec)
        _assert_same_qarray(q, ref)
        _assert_same_qarray(qt, transpose_codes(ref))


@pytest.mark.parametrize("interpret", [True, False])
@pytest.mark.parametrize("spec", [("data", None, None), (None, "data", None), (None, None, "data"),
                                  (None, "data", "model")])
def test_sharded_cast_runs_per_shard(interpret, spec, partitioner):
    """Each device casts its own shard (no gather): the codes keep x's sharding and the transposed
    codes swap the last two axes'; the bits are the unsharded reference's."""
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
    x = jax.device_put(_data((2, 256, 128), seed=3), NamedSharding(mesh, P(*spec)))
    mult = jnp.array([2.0**-2, 1.0], jnp.float32)
    fn = jax.jit(lambda v, m: fused.cast_transpose(v, m, get_format("e4m3"), interpret=interpret))
    hlo = fn.lower(x, mult).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo and "collective-permute" not in hlo
    q, qt = fn(x, mult)
    ref, ref_t = _reference(x, np.asarray(mult), "e4m3")
    np.testing.assert_array_equal(_bits(q), _bits(ref))
    np.testing.assert_array_equal(_bits(qt), _bits(ref_t))
    assert q.sharding.is_equivalent_to(NamedSharding(mesh, P(*spec)), 3)
    assert qt.sharding.is_equivalent_to(NamedSharding(mesh, P(spec[0], spec[2], spec[1])), 3)


@pytest.mark.gpu
def test_sharded_cast_runs_the_kernel_on_each_gpu():
    if jax.device_count() < 2:
        pytest.skip("needs two GPUs")
    mesh = Mesh(np.asarray(jax.devices()[:2]), ("data",))
    x = jax.device_put(_data((1, 1024, 768), seed=4), NamedSharding(mesh, P(None, "data")))
    fn = jax.jit(lambda v: quantize_pair(v, POW2))
    hlo = fn.lower(x).compile().as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 1 and "all-gather" not in hlo
    q, qt = fn(x)
    ref = quantize(x, POW2)
    _assert_same_qarray(q, ref)
    _assert_same_qarray(qt, transpose_codes(ref))
