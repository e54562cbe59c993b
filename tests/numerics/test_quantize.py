"""quantize / dequantize / fake_quant: golden blocks, layouts, special blocks, transformations, errors."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import QuantSpec, dequantize, fake_quant, quantize
from lowprec.numerics.quantize import abs_max, tensor_amax

MX_E4M3_FLOOR = QuantSpec(element="e4m3", granularity="block", block=8, scale_format="e8m0", scale_rule="floor")


def test_microxcaling_e4m3_block():
    x = jnp.array([485, 475, 400, -485, -475, -450, 2**-6, -(2**-6)], jnp.float32)
    q = quantize(x, MX_E4M3_FLOOR)
    assert float(q.scale.astype(jnp.float32)[0]) == 1.0  # shared exponent 8 - 8 = 0
    np.testing.assert_array_equal(dequantize(q), [448, 448, 384, -448, -448, -448, 2**-6, -(2**-6)])
    away = fake_quant(x, MX_E4M3_FLOOR.replace(rounding="half_away"))
    np.testing.assert_array_equal(away, [448, 448, 416, -448, -448, -448, 2**-6, -(2**-6)])


def test_microxcaling_issue_4_block_top_saturates():
    x = jnp.array([957.0, 960.0] + [1.0] * 6)
    q = quantize(x, MX_E4M3_FLOOR)
    assert float(q.scale.astype(jnp.float32)[0]) == 2.0  # se = 9 - 8
    np.testing.assert_array_equal(dequantize(q)[:2], [896, 896])


NVFP4_BLOCK = [3.0, -1.0, 0.4, 2.2, 0, -0.7, 1.3, 0.05, -2.9, 0.25, 1.0, -0.5, 0.6, 1.75, -1.1, 2.6]


def test_nvfp4_scale_chain_golden():
    x = jnp.array(NVFP4_BLOCK + [10.0] + [0.0] * 15 + [1.0] + [0.0] * 15, jnp.float32)
    q = quantize(x, lowprec.specs.get("nvfp4"))
    assert np.float32(q.global_scale) == np.float32(0.0037202383)
    assert q.data.dtype == jnp.float4_e2m1fn and q.scale.dtype == jnp.float8_e4m3fn
    scales = np.asarray(q.scale)
    assert scales[0].view(np.uint8) == 0x70 and float(scales[0]) == 128.0
    assert float(scales[2]) == 44.0  # block amax 1.0 -> 44.8 -> E4M3 44
    np.testing.assert_array_equal(np.asarray(q.data[:16]).astype(np.float32),
                                  [6, -2, 1, 4, 0, -1.5, 3, 0, -6, 0.5, 2, -1, 1.5, 4, -2, 6])
    deq = np.asarray(dequantize(q))
    assert deq[0] == np.float32(6 * 128) * np.float32(0.0037202383)
    assert np.isclose(deq[0], 2.857143)


def test_nvfp4_zero_tensor_and_zero_block():
    q = quantize(jnp.zeros(32), lowprec.specs.get("nvfp4"))
    assert float(q.global_scale) == 1.0  # the TE kernel's S_enc = 1 for amax 0
    np.testing.assert_array_equal(dequantize(q), np.zeros(32))
    x = jnp.concatenate([jnp.zeros(16), jnp.ones(16)])
    np.testing.assert_array_equal(fake_quant(x, lowprec.specs.get("nvfp4"))[:16], np.zeros(16))


def test_2d_tiles_row_and_column_copies_identical():
    w = jax.random.normal(jax.random.key(0), (64, 48))
    spec = lowprec.specs.get("nvfp4_tile16")
    along_in = fake_quant(w, spec, axis=1)  # fprop copy: blocks along d_in
    along_out = fake_quant(w.T, spec, axis=1).T  # transposed copy, tiles along the other axis
    np.testing.assert_array_equal(along_in, along_out)
    assert quantize(w, spec, axis=1).scale.shape == (4, 3)


@pytest.mark.parametrize("name", lowprec.specs.names())
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_round_trip_shapes_dtypes_and_sqnr(name, dtype):
    spec = lowprec.specs.get(name)
    x = jax.random.normal(jax.random.key(1), (2, 256, 128)).astype(dtype)
    fq = jax.jit(lambda v: dequantize(quantize(v, spec, axis=1)))
    y = fq(x)
    assert y.shape == x.shape and y.dtype == dtype
    if spec.scale_format == "e8m0" and dtype == jnp.float32:
        # idempotent with power-of-two scales: re-quantizing dequantized values changes nothing
        np.testing.assert_array_equal(fq(y), y)
    x32, y32 = np.asarray(x, np.float32), np.asarray(y, np.float32)
    sqnr = 20 * np.log10(np.linalg.norm(x32) / np.linalg.norm(x32 - y32))
    bits = spec.element.bits
    floor = 25 if bits >= 8 else (18 if bits >= 6 else 13)  # torchao-style floors (numerics.md §6)
    assert sqnr > floor, f"{name}: {sqnr:.1f} dB"


def test_block_layout_along_any_axis_matches_manual_blocks():
    x = jax.random.normal(jax.random.key(2), (6, 64, 5))
    spec = lowprec.specs.get("mxfp4")
    got = fake_quant(x, spec, axis=1)
    manual = jnp.stack([jnp.concatenate([fake_quant(x[i, 32 * b:32 * (b + 1), j], spec) for b in range(2)])
                        for i in range(6) for j in range(5)]).reshape(6, 5, 64).transpose(0, 2, 1)
    np.testing.assert_array_equal(got, manual)
    assert quantize(x, spec, axis=1).scale.shape == (6, 2, 5)


@pytest.mark.parametrize("name,sr,shape", [("nvfp4", True, (2, 48, 3)), ("mxfp4", True, (2, 64, 3)),
                                           ("mxfp8", False, (1, 40, 6)), ("mxint8", False, (3, 32, 1))])
def test_block_along_a_leading_axis_equals_quantizing_the_transpose(name, sr, shape):
    """Blocks along a leading axis: codes, scales and stochastic rounding's bits equal those of the
    transposed tensor quantized along its last axis (a wgrad operand either way round)."""
    spec = lowprec.specs.get(name).replace(rounding="sr" if sr else "rne", pad=True)
    x = jax.random.normal(jax.random.key(5), shape) * jnp.exp(jax.random.normal(jax.random.key(6), shape))
    key = jax.random.key(7) if sr else None
    got = quantize(x, spec, key=key, axis=1)
    ref = quantize(jnp.swapaxes(x, 1, 2), spec, key=key, axis=-1)
    np.testing.assert_array_equal(np.asarray(got.data, np.float32), np.swapaxes(np.asarray(ref.data, np.float32), 1, 2))
    np.testing.assert_array_equal(np.asarray(got.scale, np.float32), np.swapaxes(np.asarray(ref.scale, np.float32), 1, 2))
    np.testing.assert_array_equal(dequantize(got), jnp.swapaxes(dequantize(ref), 1, 2))


def test_channel_and_tensor_scales():
    x = jnp.array([[1.0, -4.0], [0.5, 0.25]])
    q = quantize(x, QuantSpec(element="int8", granularity="channel"), axis=1)
    np.testing.assert_array_equal(q.scale, np.array([[4], [0.5]], np.float32) / np.float32(127))
    assert q.data.dtype == jnp.int8 and int(q.data[0, 1]) == -127
    t = quantize(x, lowprec.specs.get("fp8_e4m3_tensor"))
    assert t.scale.shape == () and float(t.scale) == np.float32(4.0) / np.float32(448)


def test_zero_denormal_and_nan_blocks():
    spec = lowprec.specs.get("mxfp8")
    x = jnp.zeros((3, 32)).at[1].set(1e-39).at[2, 5].set(jnp.nan).at[2, 6].set(3.0)
    y = np.asarray(fake_quant(x, spec))
    assert (y[0] == 0).all()
    # XLA:CPU flushes float32 subnormals to zero (documented); an H100 kept 1e-39 as E4M3 0.0859375·2^-126
    assert (y[1] == (0.0 if jax.default_backend() == "cpu" else np.float32(0.0859375) * np.float32(2.0**-126))).all()
    assert np.isnan(y[2]).all()  # NaN poisons its whole block, never becomes finite
    x2 = jnp.ones((2, 32)).at[0, 0].set(jnp.inf)
    y2 = np.asarray(fake_quant(x2, spec))
    assert np.isnan(y2[0]).all() and (y2[1] == 1).all()



@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "fp8_e4m3_tensor"])
def test_a_nan_anywhere_poisons_its_group_at_every_size(name):
    """XLA:CPU's float max reduction drops NaNs in larger reductions (openxla/xla#21461: with jax
    0.10.2, 128 rows of 32 gave 1.0 or -inf), so a NaN quantized to finite codes. Every position of
    a NaN in a block, in rows of a 128 x 64 tensor, must give a NaN group (NaN dequantized values)."""
    spec = lowprec.specs.get(name)
    for pos in (0, 3, 31, 32, 63):
        x = jnp.ones((128, 64), jnp.float32).at[5, pos].set(jnp.nan)
        y = np.isnan(np.asarray(jax.jit(lambda v: fake_quant(v, spec))(x)))
        group = np.zeros_like(y)
        if spec.granularity == "tensor":
            group[:] = True
        else:
            group[5, pos // spec.block * spec.block:(pos // spec.block + 1) * spec.block] = True
        assert y[group].all() and not y[~group].any(), pos
        assert np.isnan(tensor_amax(x)) and float(abs_max(x[:4])) == 1.0

def test_tseng_headroom_never_clips_under_sr():
    spec = QuantSpec(element="e2m1", granularity="block", block=32, scale_format="e8m0", scale_rule="floor",
                     headroom=0.75, rounding="sr")
    x = jax.random.normal(jax.random.key(3), (64, 32)) * 5
    draws = jax.vmap(lambda k: fake_quant(x, spec, key=k))(jax.random.split(jax.random.key(4), 400))
    q = quantize(x, spec, key=jax.random.key(5))
    assert float(jnp.max(jnp.abs(q.data.astype(jnp.float32)))) <= 6.0
    scaled = x * 0.75 / jnp.repeat(q.scale.astype(jnp.float32), 32, axis=1)
    assert float(jnp.max(jnp.abs(scaled))) < 6.0  # nothing clips
    np.testing.assert_allclose(draws.mean(0), x, atol=float(jnp.max(jnp.abs(x))) * 0.05)


def test_storage_bytes_are_real():
    x = jnp.ones((128, 128))
    assert quantize(x, lowprec.specs.get("mxfp4")).nbytes == 128 * 128 // 2 + 128 * 4
    assert quantize(x, lowprec.specs.get("fp8_e4m3_tensor")).nbytes == 128 * 128 + 4
    assert np.dtype(quantize(x, lowprec.specs.get("nvint4")).data.dtype) == np.dtype(ml_dtypes.int4)
    assert quantize(x, lowprec.specs.get("nvint4")).nbytes == 128 * 128 // 2 + 128 * 8 + 4


def test_jit_vmap_grad_and_pytree():
    spec = lowprec.specs.get("mxfp4")
    x = jax.random.normal(jax.random.key(6), (8, 64))
    eager = fake_quant(x, spec)
    np.testing.assert_array_equal(jax.jit(lambda v: fake_quant(v, spec))(x), eager)
    np.testing.assert_array_equal(jax.vmap(lambda v: fake_quant(v, spec))(x), eager)
    g = jax.grad(lambda v: jnp.sum(fake_quant(v, spec) * 3.0))(x)
    np.testing.assert_array_equal(g, 3.0 * np.ones_like(x))  # straight-through
    q = jax.jit(lambda v: quantize(v, spec))(x)
    leaves = jax.tree_util.tree_leaves(q)
    assert len(leaves) == 2  # data and scale (no global scale)
    np.testing.assert_array_equal(jax.jit(dequantize)(q), eager)
    sr = spec.replace(rounding="sr")
    k = jax.random.key(7)
    np.testing.assert_array_equal(jax.jit(lambda v, kk: fake_quant(v, sr, key=kk))(x, k), fake_quant(x, sr, key=k))


def test_padding_and_errors():
    x = jnp.ones((4, 40))
    with pytest.raises(ValueError, match="block size 32 does not divide axis 1 of length 40"):
        quantize(x, lowprec.specs.get("mxfp4"))
    padded = lowprec.specs.get("mxfp4").replace(pad=True)
    assert fake_quant(x, padded).shape == (4, 40)
    with pytest.raises(ValueError, match="key"):
        fake_quant(x, padded.replace(rounding="sr"))
    with pytest.raises(ValueError, match="QuantSpec"):
        quantize(x, "mxfp4")
    with pytest.raises(ValueError, match="tile_axis"):
        quantize(jnp.ones((16, 16, 16)), lowprec.specs.get("nvfp4_tile16"), axis=0)


@pytest.mark.parametrize("name", ["fp8_e4m3_tensor", "fp8_e5m2_tensor_pow2"])
def test_exact_amax_gives_the_same_codes_without_reducing_again(name):
    """amax_exact: the caller's own max |x| (NaN/Inf included) stands in for the quantizer's reduction."""
    from lowprec.numerics.quantize import quantize_pair, tensor_amax

    spec = lowprec.specs.get(name)
    x = jax.random.normal(jax.random.key(3), (64, 96), jnp.float32) * 7
    x = x.at[0, 0].set(jnp.nan) if name == "fp8_e4m3_tensor" else x
    for fn in (lambda v, **kw: quantize(v, spec, **kw), lambda v, **kw: quantize_pair(v, spec, **kw)[0]):
        ref, got = fn(x), fn(x, amax=tensor_amax(x), amax_exact=True)
        np.testing.assert_array_equal(np.asarray(got.data, np.float32), np.asarray(ref.data, np.float32))
        np.testing.assert_array_equal(np.asarray(got.scale, np.float32), np.asarray(ref.scale, np.float32))
    # the jaxpr of the exact path has no reduction over x
    jaxpr = str(jax.make_jaxpr(lambda v, a: quantize(v, spec, amax=a, amax_exact=True))(x, tensor_amax(x)))
    assert "reduce_max" not in jaxpr
    with pytest.raises(ValueError, match="amax_exact=True"):
        quantize(x, spec, amax_exact=True)
    with pytest.raises(ValueError, match="amax_exact=True.*quest_rms"):
        quantize(x, spec.replace(scale_rule="quest_rms"), amax=jnp.float32(1), amax_exact=True)
