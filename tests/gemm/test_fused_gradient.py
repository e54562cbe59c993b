"""The fused input gradient: the clipping mask and the inverse Hadamard in one pass (and Quartet
end to end with its forward operands from `fused_operand`).

The Pallas kernel runs here in interpret mode (CPU), and its XLA twin compiled; both must give the
bits of the composition they replace (unpack the mask's words, multiply, inverse_hadamard, cast),
with non-finite gradients and sharded inputs, and quartet's gradients must be those of the unfused
path.
On GPUs (marked) the kernel runs compiled, against the composition compiled for the same GPU.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import lowprec
from lowprec.gemm import clip_mask, fused_gradient, fused_operand
from lowprec.transforms.hadamard import HadamardSpec, hadamard_matrix

# (hadamard, key): quartet's forward rotation, and every other matmul rotation the kernel takes
CASES = [(HadamardSpec(size=32), None),
         (HadamardSpec(size=32, signs="per_call", sign_side="right"), jax.random.key(3)),
         (HadamardSpec(size=16, signs="fixed_te"), None),
         (HadamardSpec(size=64, signs="per_call"), jax.random.key(4))]
IDS = ["h32", "h32_per_call_right", "h16_fixed_te", "h64_per_call"]


def _inputs(shape, seed=0, non_finite=False):
    """A float32 gradient over many binades and random mask words (about half the bits set, one
    word all clear and one all set)."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    g = jax.random.normal(k1, shape) * 2.0 ** jax.random.randint(k3, shape, -20, 20).astype(jnp.float32)
    words = jax.random.bits(k2, shape[:-1] + (shape[-1] // clip_mask.WORD,), jnp.uint32)
    words = words.at[..., 0, 0].set(0).at[..., 1, 0].set(0xFFFFFFFF)
    if non_finite:
        g = g.at[..., 1, 3].set(jnp.inf).at[..., 2, 40].set(jnp.nan).at[..., 5, 7].set(-jnp.inf)
    return g, words


def _bits(a):
    return np.asarray(jnp.asarray(a).astype(jnp.float32)).view(np.int32)


def _assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_mask_packs_and_unpacks_as_numpy_little_bit_order():
    """bit i of word j is element 32j + i (numpy's packbits, bitorder little, little-endian words),
    and keep compares |v| with its block's bound."""
    v = (jax.random.normal(jax.random.key(1), (3, 128)) * 2).astype(jnp.bfloat16).at[0, 5].set(jnp.nan)
    bound = jnp.exp2(jax.random.randint(jax.random.key(2), (3, 8), -1, 3).astype(jnp.float32)).at[1, 2].set(0.0)
    mask = np.abs(np.asarray(v, np.float64)) <= np.repeat(np.asarray(bound, np.float64), 16, axis=-1)
    np.testing.assert_array_equal(np.asarray(clip_mask.keep(v, bound)), mask)
    words = np.packbits(mask, axis=-1, bitorder="little").view("<u4")
    np.testing.assert_array_equal(np.asarray(clip_mask.pack(jnp.asarray(mask))), words)
    np.testing.assert_array_equal(np.asarray(clip_mask.unpack(jnp.asarray(words))), mask)
    assert 0.2 < mask.mean() < 0.8 and not mask[0, 5]


def test_reference_is_the_masked_gradient_rotated_back():
    """Written out independently: zero where the mask's bit is clear, times Hᵀ per block of 32, in float64."""
    g, words = _inputs((1, 64, 64))
    mask = np.unpackbits(np.asarray(words).astype("<u4").view(np.uint8), axis=-1, bitorder="little").astype(bool)
    h = np.asarray(hadamard_matrix(32), np.float64)
    want = ((np.asarray(g, np.float64) * mask).reshape(-1, 32) @ h.T).reshape(g.shape)
    got = fused_gradient.reference(g, words, HadamardSpec(size=32), None, jnp.float32)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert 0.2 < mask.mean() < 0.8


@pytest.mark.parametrize("transpose", [False, True], ids=["as_is", "transposed"])
@pytest.mark.parametrize("out_dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("hadamard,key", CASES, ids=IDS)
def test_kernel_gives_the_bits_of_the_composition(hadamard, key, interpret, out_dtype, transpose):
    g, words = _inputs((2, 128, 256), non_finite=True)
    got = jax.jit(lambda *a: fused_gradient.masked_inverse(*a, hadamard, key, out_dtype, transpose=transpose,
                                                           interpret=interpret))(g, words)
    want = fused_gradient.reference(g, words, hadamard, key, out_dtype)
    _assert_same(got, jnp.swapaxes(want, -1, -2) if transpose else want)
    assert np.isnan(np.asarray(got, np.float32)).any() and np.isfinite(np.asarray(got, np.float32)).mean() > 0.9


def test_fits_and_errors():
    had = HadamardSpec(size=32)
    assert fused_gradient.fits((4, 128, 64), jnp.float32, had)
    assert not fused_gradient.fits((4, 128, 64), jnp.bfloat16, had)  # the gradient is float32
    assert not fused_gradient.fits((4, 96, 64), jnp.float32, had)  # tiles of 64 do not divide 96
    assert not fused_gradient.fits((128, 64), jnp.float32, HadamardSpec(size=128))
    assert not fused_gradient.fits((128, 64), jnp.float32, HadamardSpec(size=32, impl="butterfly"))
    assert not fused_gradient.fits((128, 64), jnp.float32, None)
    g, words = _inputs((1, 128, 64))
    for wrong in (words.astype(jnp.int32), words[:, :64], jnp.ones((1, 128, 4), jnp.uint32)):
        said = re.escape(f"{jnp.dtype(wrong.dtype).name} {tuple(wrong.shape)} mask words (needs uint32 (1, 128, 2))")
        with pytest.raises(ValueError, match=said + ".* check fits"):
            fused_gradient.masked_inverse(g, wrong, had, None, jnp.bfloat16)


@pytest.mark.parametrize("transpose", [False, True], ids=["as_is", "transposed"])
@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("sharding", [("data", None, None), (None, "data", None), (None, None, "data"),
                                      (None, "data", "model")])
def test_sharded_gradient_runs_per_shard(sharding, interpret, transpose, partitioner):
    """Each device runs the kernel on its shard: no gather, the unsharded bits, the gradient's
    sharding out (T's and C's swapped when transposed)."""
    hadamard, key = CASES[1]
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
    g, words = _inputs((2, 256, 256), seed=2)
    fn = jax.jit(lambda *a: fused_gradient.masked_inverse(*a, hadamard, key, jnp.bfloat16, transpose=transpose,
                                                          interpret=interpret))
    shard = lambda a: jax.device_put(a, NamedSharding(mesh, P(*sharding)))  # noqa: E731
    args = (shard(g), shard(words))
    hlo = fn.lower(*args).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo and "collective-permute" not in hlo
    got = fn(*args)
    _assert_same(got, fused_gradient.reference(g, words, hadamard, key, jnp.bfloat16, transpose=transpose))
    out = (sharding[0], sharding[2], sharding[1]) if transpose else sharding
    assert got.sharding.is_equivalent_to(NamedSharding(mesh, P(*out)), 3)


def _quartet(x, w):
    """(y, (dx, dw)) of quartet's dot_general under a loss whose cotangent varies per element."""
    dn = (((1,), (0,)), ((), ()))

    def loss(a, b):
        y = lowprec.dot_general(a, b, dn, recipe="quartet", key=jax.random.key(1))
        return jnp.sum(y.astype(jnp.float32) ** 2), y

    grads, y = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(x, w)
    return (y,) + grads


@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
def test_quartet_equals_the_unfused_path(interpret, monkeypatch):
    """Quartet's forward operands (QuEST sigma scales) and input gradients come from the kernels (X
    and W each), with the bits of the unfused path: y, dX and dW."""
    x = (jax.random.normal(jax.random.key(5), (256, 128)) * 3).astype(jnp.bfloat16)
    w = (jax.random.normal(jax.random.key(6), (128, 192)) * 0.1).astype(jnp.bfloat16)
    calls = []
    for module, name in ((fused_gradient, "masked_inverse"), (fused_operand, "forward_operand")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: calls.append(name)
                            or real(*a, interpret=interpret, **k))
    got = _quartet(x, w)
    assert sorted(calls) == ["forward_operand"] * 2 + ["masked_inverse"] * 2
    monkeypatch.setattr(fused_gradient, "fits", lambda *a: False)
    monkeypatch.setattr(fused_operand, "fits", lambda *a: False)
    for g, r in zip(got, _quartet(x, w)):
        _assert_same(g, r)


@pytest.mark.gpu
@pytest.mark.parametrize("hadamard,key", CASES, ids=IDS)
def test_compiled_kernel_on_gpu_matches_xla_on_gpu(hadamard, key):
    """Against the composition compiled by XLA on the same GPU, whose float32 product per block may
    sum in another order (and in bf16 pieces): float32 outputs within 2 ulps of the float32 sum's
    magnitude, bf16 outputs equal but for rare roundings of those last bits."""
    g, words = _inputs((1, 2048, 1024), seed=3)
    for out_dtype, transpose in ((jnp.float32, False), (jnp.bfloat16, False), (jnp.bfloat16, True)):
        fn = jax.jit(lambda *a: fused_gradient.masked_inverse(*a, hadamard, key, out_dtype, transpose=transpose))
        assert "__gpu$xla.gpu.triton" in fn.lower(g, words).compile().as_text()
        got = np.asarray(fn(g, words).astype(jnp.float32))
        want = np.asarray(jax.jit(lambda *a: fused_gradient.reference(*a, hadamard, key, out_dtype, transpose=transpose))(
            g, words).astype(jnp.float32))
        scale = np.repeat(np.abs(np.asarray(g)).reshape(-1, hadamard.size).max(-1), hadamard.size).reshape(g.shape)
        if out_dtype == jnp.float32:
            np.testing.assert_array_less(np.abs(got - want), 2 * 2.0**-23 * hadamard.size * scale + 1e-30)
        else:
            assert (got != want).mean() < 1e-4


@pytest.mark.gpu
def test_quartet_gradients_on_gpu_use_the_kernel():
    x = (jax.random.normal(jax.random.key(5), (512, 256)) * 3).astype(jnp.bfloat16)
    w = (jax.random.normal(jax.random.key(6), (256, 384)) * 0.1).astype(jnp.bfloat16)
    dn = (((1,), (0,)), ((), ()))
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe="quartet", key=jax.random.key(1)).astype(jnp.float32) ** 2)  # noqa: E731
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    assert hlo.count("__gpu$xla.gpu.triton") >= 2 + 4 + 2  # forward operands, backward operands, input gradients
