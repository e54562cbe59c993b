"""Tests for lowprec.transforms.hadamard against independent numpy float64 references."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from lowprec.transforms import (
    TE_FIXED_SIGNS_16,
    HadamardSpec,
    apply_hadamard,
    hadamard_matrix,
    inverse_hadamard,
    random_signs,
    rotation_matrix,
)

SIZES = (16, 32, 64, 128, 256)
IMPLS = ("matmul", "butterfly")


def ref_hadamard(n: int) -> np.ndarray:
    """Sylvester H_n/sqrt(n) from the closed form H_ij = (-1)^popcount(i & j), float64."""
    i = np.arange(n)
    both = i[:, None] & i[None, :]
    parity = sum((both >> b) & 1 for b in range(max(n.bit_length(), 1))) % 2
    return (1.0 - 2.0 * parity) / np.sqrt(n)


def ref_rotation(n: int, signs, side: str) -> np.ndarray:
    h = ref_hadamard(n)
    if signs is None:
        return h
    s = np.asarray(signs, dtype=np.float64)
    return s[:, None] * h if side == "left" else h * s[None, :]


def ref_apply(x: np.ndarray, r: np.ndarray, axis: int) -> np.ndarray:
    """Blocks of len(r) along `axis`, each row-vector times r, in float64."""
    xt = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    n = r.shape[0]
    y = (xt.reshape(*xt.shape[:-1], -1, n) @ r).reshape(xt.shape)
    return np.moveaxis(y, -1, axis)


def spec_cases():
    """Every (size, signs, side) combination, fixed_te only at 16."""
    for size, signs, side in itertools.product(SIZES, ("none", "fixed_te", "per_call"), ("left", "right")):
        if signs == "fixed_te" and size != 16:
            continue
        yield size, signs, side


def key_for(spec: HadamardSpec, seed: int = 0):
    return jax.random.key(seed) if spec.needs_key else None


def randn(seed: int, shape, dtype=jnp.float32):
    """Test data from a seeded numpy Generator (avoids compiling a sampler per shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32), dtype=dtype)


# --- Hadamard matrix and sign constants -------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_hadamard_matrix_entries_exact(n, dtype):
    h = np.asarray(hadamard_matrix(n, dtype)).astype(np.float64)
    mag = np.float64(np.asarray(1.0 / np.sqrt(n)).astype(jnp.dtype(dtype)))
    np.testing.assert_array_equal(h, np.sign(ref_hadamard(n)) * mag)
    assert hadamard_matrix(n, dtype).dtype == jnp.dtype(dtype)


@pytest.mark.parametrize("n", [0, -4, 3, 12, 24, 2.0, True])
def test_hadamard_matrix_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        hadamard_matrix(n)


def test_hadamard_matrix_rejects_non_float_dtype():
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        hadamard_matrix(16, jnp.int32)


def test_te_fixed_signs_bitmask_and_bf16_entries():
    assert len(TE_FIXED_SIGNS_16) == 16 and set(TE_FIXED_SIGNS_16) == {1, -1}
    mask = sum(1 << i for i, s in enumerate(TE_FIXED_SIGNS_16) if s == -1)
    assert mask == 0xD7E8 == 55272
    r = np.asarray(rotation_matrix(HadamardSpec(size=16, signs="fixed_te"), length=16, dtype=jnp.bfloat16))
    assert r.dtype == ml_dtypes.bfloat16
    assert set(np.abs(r.astype(np.float64)).ravel()) == {0.25}
    np.testing.assert_array_equal(r.astype(np.float64), ref_rotation(16, TE_FIXED_SIGNS_16, "left"))


def test_random_signs_are_pm1_and_keyed():
    s = np.asarray(random_signs(jax.random.key(3), 4096))
    assert set(s.tolist()) == {1.0, -1.0}
    assert abs(s.mean()) < 0.1  # 4096 fair draws: |mean| < 0.1 with probability ~1 - 1e-10
    np.testing.assert_array_equal(s, np.asarray(random_signs(jax.random.key(3), 4096)))
    assert not np.array_equal(s, np.asarray(random_signs(jax.random.key(4), 4096)))
    with pytest.raises(ValueError, match="key"):
        random_signs(None, 16)
    with pytest.raises(ValueError, match="n must be"):
        random_signs(jax.random.key(0), 0)


# --- Rotation matrices ----------------------------------------------------------------

@pytest.mark.parametrize("size,signs,side", list(spec_cases()))
def test_rotation_is_orthogonal_and_matches_reference(size, signs, side):
    spec = HadamardSpec(size=size, signs=signs, sign_side=side)
    key = key_for(spec, seed=size)
    r = np.asarray(rotation_matrix(spec, length=2 * size, key=key), dtype=np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(size), atol=1e-6)
    s = {"none": None, "fixed_te": TE_FIXED_SIGNS_16,
         "per_call": None if key is None else np.asarray(random_signs(key, size))}[signs]
    np.testing.assert_allclose(r, ref_rotation(size, s, side), rtol=1e-7, atol=0)


def test_full_axis_size_zero():
    spec = HadamardSpec(size=0, signs="per_call")
    key = jax.random.key(1)
    r = np.asarray(rotation_matrix(spec, length=512, key=key), dtype=np.float64)
    assert r.shape == (512, 512)
    np.testing.assert_allclose(r @ r.T, np.eye(512), atol=1e-6)
    x = randn(0, (3, 512))
    np.testing.assert_allclose(np.asarray(apply_hadamard(x, spec, axis=1, key=key)),
                               ref_apply(np.asarray(x), r, axis=1), atol=1e-5)


# --- apply / inverse ------------------------------------------------------------------

# Every size, sign mode and sign side, each run with both impls (a compile per case, so
# not the full grid; rotation matrices are checked on the full grid above).
APPLY_CASES = [(16, "fixed_te", "left"), (16, "per_call", "right"), (32, "none", "left"),
               (64, "per_call", "left"), (128, "none", "left"),
               (256, "per_call", "right")]


@pytest.mark.parametrize("size,signs,side", APPLY_CASES)
def test_apply_matches_reference_inverts_and_impls_agree(size, signs, side):
    key = jax.random.key(7) if signs == "per_call" else None
    x = randn(size, (3, 2 * size))
    outs = {}
    for impl in IMPLS:
        spec = HadamardSpec(size=size, signs=signs, sign_side=side, impl=impl)
        r = np.asarray(rotation_matrix(spec, length=2 * size, key=key), dtype=np.float64)
        y = apply_hadamard(x, spec, axis=-1, key=key)
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_allclose(np.asarray(y), ref_apply(np.asarray(x), r, axis=-1), atol=2e-6)
        np.testing.assert_allclose(np.asarray(inverse_hadamard(y, spec, axis=-1, key=key)), np.asarray(x), atol=2e-6)
        outs[impl] = np.asarray(y)
    # butterfly == matmul to fp32 rounding (log2(size) add/sub stages vs one dot)
    np.testing.assert_allclose(outs["butterfly"], outs["matmul"], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("size,shape,axis,signs", [
    (16, (48, 5), 0, "per_call"), (32, (2, 64, 3), 1, "none"), (64, (2, 3, 128), -1, "per_call"),
    (128, (128,), 0, "none"), (256, (256, 2), -2, "per_call"),
])
def test_both_operands_rotated_cancel_in_product(size, shape, axis, signs):
    """(xR)(wR)^T == x w^T, contracting `axis`, with one key shared by both operands."""
    spec = HadamardSpec(size=size, signs=signs, sign_side="left")
    key = key_for(spec, seed=11)
    x = randn(1, shape)
    w = randn(2, (4, shape[axis]))
    xr = apply_hadamard(x, spec, axis=axis, key=key)
    wr = apply_hadamard(w, spec, axis=1, key=key)
    got = np.tensordot(np.asarray(xr, np.float64), np.asarray(wr, np.float64), axes=([axis], [1]))
    want = np.tensordot(np.asarray(x, np.float64), np.asarray(w, np.float64), axes=([axis], [1]))
    np.testing.assert_allclose(got, want, atol=2e-5 * np.sqrt(shape[axis]))
    # A different key for w breaks the cancellation (the test can fail).
    if signs == "per_call":
        wr_other = apply_hadamard(w, spec, axis=1, key=jax.random.key(12))
        bad = np.tensordot(np.asarray(xr, np.float64), np.asarray(wr_other, np.float64), axes=([axis], [1]))
        assert np.max(np.abs(bad - want)) > 0.1


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_input_keeps_dtype_and_inverts(impl):
    spec = HadamardSpec(size=16, signs="fixed_te", impl=impl)
    x = randn(4, (8, 64), jnp.bfloat16)
    y = apply_hadamard(x, spec, axis=1)
    assert y.dtype == jnp.bfloat16
    want = ref_apply(np.asarray(x, np.float64), ref_rotation(16, TE_FIXED_SIGNS_16, "left"), axis=1)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=2**-8, atol=1e-6)
    back = inverse_hadamard(y, spec, axis=1)
    np.testing.assert_allclose(np.asarray(back, np.float64), np.asarray(x, np.float64), rtol=2**-7, atol=1e-2)


@pytest.mark.parametrize("size,signs,side", [(16, "fixed_te", "left"), (32, "per_call", "right"), (64, "per_call", "left")])
def test_bf16_matmul_form_equals_float32_form_rounded_once(size, signs, side):
    """bf16 input takes a bf16 GEMM against the ±1 matrix, then 1/sqrt(n); the float32 input path
    (f32 matmul at HIGHEST) rounded to bf16 once gives the same bits where the scale is a power of
    two (16, 64), and is within one bf16 step where it is not (32)."""
    spec = HadamardSpec(size=size, signs=signs, sign_side=side)
    key = jax.random.key(3) if spec.needs_key else None
    x = randn(5, (64, 4 * size), jnp.bfloat16)
    for fn in (apply_hadamard, inverse_hadamard):
        y = np.asarray(fn(x, spec, axis=1, key=key), np.float64)
        y32 = np.asarray(fn(x.astype(jnp.float32), spec, axis=1, key=key).astype(jnp.bfloat16), np.float64)
        if size in (16, 64):
            np.testing.assert_array_equal(y, y32)
        else:
            assert np.mean(y == y32) > 0.99
            np.testing.assert_allclose(y, y32, rtol=2**-7, atol=1e-6)  # atol: sums that cancel to ~0


def test_per_call_same_key_same_signs_different_keys_differ():
    spec = HadamardSpec(size=32, signs="per_call")
    k1, k2 = jax.random.key(21), jax.random.key(22)
    r1 = np.asarray(rotation_matrix(spec, length=64, key=k1))
    np.testing.assert_array_equal(r1, np.asarray(rotation_matrix(spec, length=128, key=k1)))
    assert not np.array_equal(r1, np.asarray(rotation_matrix(spec, length=64, key=k2)))
    x = randn(6, (4, 64))
    np.testing.assert_array_equal(np.asarray(apply_hadamard(x, spec, axis=1, key=k1)),
                                  np.asarray(apply_hadamard(x, spec, axis=1, key=k1)))
    assert not np.array_equal(np.asarray(apply_hadamard(x, spec, axis=1, key=k1)),
                              np.asarray(apply_hadamard(x, spec, axis=1, key=k2)))


# --- Why right-side signs are a no-op -----------------------------------------------------

def absmax_int_quant(y: np.ndarray, block: int, qmax: int = 7) -> np.ndarray:
    """Symmetric abs-max round-to-int fake quantizer over blocks along the last axis."""
    yb = y.reshape(*y.shape[:-1], -1, block)
    scale = np.max(np.abs(yb), axis=-1, keepdims=True) / qmax
    scale = np.where(scale == 0, 1, scale)
    return (np.clip(np.rint(yb / scale), -qmax, qmax) * scale).reshape(y.shape)


@pytest.mark.parametrize("impl", IMPLS)
def test_right_side_signs_commute_with_symmetric_absmax_quantizer(impl):
    size = 32
    key = jax.random.key(9)
    d = np.tile(np.asarray(random_signs(key, size)), 4)
    x, w = randn(7, (8, 4 * size)), randn(8, (8, 4 * size))

    def rotated(spec):
        k = key if spec.needs_key else None
        return [np.asarray(apply_hadamard(v, spec, axis=1, key=k)) for v in (x, w)]

    def quantized_product(xq, wq):
        return absmax_int_quant(xq, size).astype(np.float64) @ absmax_int_quant(wq, size).astype(np.float64).T

    xh, wh = rotated(HadamardSpec(size=size, impl=impl))
    xr, wr = rotated(HadamardSpec(size=size, signs="per_call", sign_side="right", impl=impl))
    xl, wl = rotated(HadamardSpec(size=size, signs="per_call", sign_side="left", impl=impl))
    np.testing.assert_array_equal(xr, xh * d)  # H·D only flips coordinate signs of xH
    np.testing.assert_array_equal(absmax_int_quant(xr, size), absmax_int_quant(xh, size) * d)
    plain = quantized_product(xh, wh)
    np.testing.assert_allclose(quantized_product(xr, wr), plain, rtol=1e-12, atol=1e-12)
    # Left-side signs act before mixing and really change the quantized product.
    assert np.max(np.abs(quantized_product(xl, wl) - plain)) > 1e-3


# --- Transformations: jit, vmap, grad -------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_jit_vmap_grad(impl):
    spec = HadamardSpec(size=16, signs="per_call", impl=impl)
    key = jax.random.key(13)
    x = randn(10, (5, 3, 64))
    c = randn(11, (5, 3, 64))
    eager = apply_hadamard(x, spec, axis=-1, key=key)
    jitted = jax.jit(apply_hadamard, static_argnames=("spec", "axis"))(x, spec, axis=-1, key=key)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-6)
    # vmap over a middle axis, rotating the leading axis of each slice.
    vmapped = jax.vmap(lambda xi: apply_hadamard(xi, spec, axis=0, key=key), in_axes=1, out_axes=1)(
        jnp.moveaxis(x, -1, 0))
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(jnp.moveaxis(eager, -1, 0)), rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(apply_hadamard(v, spec, axis=-1, key=key) * c))(x)
    r = np.asarray(rotation_matrix(spec, length=64, key=key), np.float64)
    np.testing.assert_allclose(np.asarray(grad), ref_apply(np.asarray(c), r.T, axis=-1), atol=2e-6)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(inverse_hadamard(c, spec, axis=-1, key=key)), atol=2e-6)


# --- Errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(size=24), r"size must be one of"),
    (dict(size=512), r"size must be one of"),
    (dict(size=True), r"size must be one of"),
    (dict(size=16, signs="random"), r"signs must be one of"),
    (dict(size=16, sign_side="both"), r"sign_side must be one of"),
    (dict(size=16, impl="fft"), r"impl must be one of"),
    (dict(size=32, signs="fixed_te"), r"fixed_te.*size=16"),
])
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HadamardSpec(**kwargs)


def test_spec_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        HadamardSpec(16)  # type: ignore[misc]
    spec = HadamardSpec(size=16)
    with pytest.raises(AttributeError):
        spec.size = 32  # type: ignore[misc]


def test_apply_errors():
    x = jnp.zeros((4, 48))
    with pytest.raises(ValueError, match=r"axis 1 .*size=32 does not divide the axis length 48"):
        apply_hadamard(x, HadamardSpec(size=32), axis=1)
    with pytest.raises(ValueError, match=r"axis 1 .*power of two.*48"):
        apply_hadamard(x, HadamardSpec(size=0), axis=1)
    with pytest.raises(ValueError, match=r"per_call.*needs a key"):
        apply_hadamard(x, HadamardSpec(size=16, signs="per_call"), axis=1)
    with pytest.raises(ValueError, match=r"does not use one"):
        apply_hadamard(x, HadamardSpec(size=16), axis=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"axis must be an int in \[-2, 2\)"):
        apply_hadamard(x, HadamardSpec(size=16), axis=2)
    with pytest.raises(ValueError, match=r"x.dtype must be one of"):
        apply_hadamard(jnp.zeros((4, 48), jnp.int32), HadamardSpec(size=16), axis=1)
    with pytest.raises(ValueError, match=r"spec must be a HadamardSpec"):
        inverse_hadamard(x, {"size": 16}, axis=1)  # type: ignore[arg-type]
