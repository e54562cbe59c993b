"""The fused backward operand: (transpose,) Hadamard, block quantization and split scales in one pass.

The Pallas kernel runs here in interpret mode (CPU), and its XLA twin compiled, and both must give
the bits of the composition they replace ([swapaxes ->] apply_hadamard -> quantize -> split_scales)
for every recipe operand they serve, with non-finite blocks and sharded inputs. On GPUs (marked)
the kernel runs compiled, against the composition compiled for the same GPU.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import lowprec
from lowprec.gemm import fused_operand
from lowprec.numerics.quantize import quantize, split_scales
from lowprec.transforms.hadamard import HadamardSpec, apply_hadamard

# (name, spec, hadamard): each backward operand the kernel serves, plus one without a rotation
CASES = [(f"{r}.{role}.{slot}", getattr(getattr(lowprec.recipes.get(r), role), slot).spec,
          getattr(lowprec.recipes.get(r), role).hadamard)
         for r in ("mxfp4_bwd", "quartet")
         for role, slot in (("wgrad", "lhs"), ("wgrad", "rhs"), ("dgrad", "lhs"), ("dgrad", "rhs"))]
CASES.append(("mxfp4_sr.plain", dataclasses.replace(lowprec.specs.get("mxfp4"), rounding="sr"), None))
IDS = [c[0] for c in CASES]


def _keys(hadamard):
    return jax.random.key(5), (jax.random.key(7) if hadamard is not None and hadamard.needs_key else None)


def _data(shape, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, shape) * 2.0 ** jax.random.randint(k2, shape, -6, 6).astype(jnp.float32)
    return x.astype(jnp.bfloat16)


def _bits(a):
    return np.asarray(jnp.asarray(a).astype(jnp.float32)).view(np.int32)


def _composition(x, spec, hadamard, qkey, hkey, transpose):
    """Written out here, independently of fused_operand.reference."""
    xt = jnp.swapaxes(x, -1, -2) if transpose else x
    if hadamard is not None:
        xt = apply_hadamard(xt, hadamard, axis=-1, key=hkey)
    inner, outer = split_scales(quantize(xt, spec, key=qkey, axis=-1))
    return inner.astype(jnp.bfloat16), outer


def _assert_same(got, ref):
    (gi, go), (ri, ro) = got, ref
    assert gi.shape == ri.shape and gi.dtype == ri.dtype == jnp.bfloat16
    gn, rn = np.isnan(np.asarray(gi, np.float32)), np.isnan(np.asarray(ri, np.float32))
    np.testing.assert_array_equal(gn, rn)  # NaNs where the composition has them (payloads may differ)
    np.testing.assert_array_equal(_bits(gi)[~gn], _bits(ri)[~rn])  # every other bit, signed zeros too
    np.testing.assert_array_equal(_bits(go), _bits(ro))


def test_served_cases_are_the_recipes_backward_operands():
    assert all(fused_operand.fits((256, 128), jnp.bfloat16, spec, had) for _, spec, had in CASES)


@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "as_is"])
@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("name,spec,hadamard", CASES, ids=IDS)
def test_fused_operand_gives_the_bits_of_the_composition(name, spec, hadamard, interpret, transpose):
    x = _data((2, 128, 192))
    qkey, hkey = _keys(hadamard)
    got = jax.jit(lambda v: fused_operand.split_operand(v, spec, hadamard, qkey, hkey, transpose=transpose,
                                                        interpret=interpret))(x)
    _assert_same(got, _composition(x, spec, hadamard, qkey, hkey, transpose))
    assert got[0].shape == ((2, 192, 128) if transpose else (2, 128, 192))


def test_leading_axes_and_the_stochastic_draws_follow_the_flat_index():
    """Leading axes flatten into the kernel's batch; other keys draw other codes."""
    _, spec, hadamard = CASES[0]
    x = _data((2, 3, 64, 128), seed=8)
    qkey, hkey = _keys(hadamard)
    got = fused_operand.split_operand(x, spec, hadamard, qkey, hkey, transpose=True, interpret=True)
    _assert_same(got, _composition(x, spec, hadamard, qkey, hkey, True))
    other = fused_operand.split_operand(x, spec, hadamard, jax.random.key(6), hkey, transpose=True, interpret=True)
    assert (np.asarray(other[0], np.float32) != np.asarray(got[0], np.float32)).mean() > 0.1


@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "as_is"])
@pytest.mark.parametrize("name,spec,hadamard", CASES[:1] + CASES[4:5] + CASES[-1:], ids=IDS[:1] + IDS[4:5] + IDS[-1:])
def test_non_finite_blocks_match(name, spec, hadamard, transpose):
    """A NaN or Inf poisons its own block (NaN operand values) as the composition does, and no other;
    Triton's max drops NaNs, so the kernel tests for them itself."""
    x = _data((1, 128, 128), seed=1).at[0, 3, 5].set(jnp.nan).at[0, 70, 64].set(jnp.inf)
    qkey, hkey = _keys(hadamard)
    got = fused_operand.split_operand(x, spec, hadamard, qkey, hkey, transpose=transpose, interpret=True)
    ref = _composition(x, spec, hadamard, qkey, hkey, transpose)
    assert 0 < np.isnan(np.asarray(got[0], np.float32)).sum() <= 2 * 64
    _assert_same(got, ref)


def test_fits_and_the_error_for_operands_it_does_not_serve():
    _, spec, had = CASES[0]
    assert fused_operand.fits((4, 128, 64), jnp.bfloat16, spec, had)
    assert not fused_operand.fits((4, 128, 64), jnp.float32, spec, had)  # the rotation's bits need bf16
    assert not fused_operand.fits((4, 96, 64), jnp.bfloat16, spec, had)  # tiles of 64 do not divide 96
    assert not fused_operand.fits((128, 64), jnp.bfloat16, spec, HadamardSpec(size=128))  # wider than a tile
    for other in ("nvfp4", "mxfp4", "fp8_e4m3_tensor"):  # two levels; round to nearest; per tensor
        assert not fused_operand.fits((128, 64), jnp.bfloat16, lowprec.specs.get(other), None)
    with pytest.raises(ValueError, match="no kernel for a float32 .* check fits"):
        fused_operand.split_operand(jnp.ones((128, 64), jnp.float32), spec, had, jax.random.key(0), transpose=True)


@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "as_is"])
@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("sharding", [("data", None, None), (None, "data", None), (None, None, "data"),
                                      (None, "data", "model")])
def test_sharded_operand_runs_per_shard(sharding, interpret, transpose, partitioner):
    """Each device runs the kernel on its shard (no gather); stochastic rounding draws at the global
    indices, so the bits are the unsharded ones, and a transposed output swaps T's and C's shardings."""
    _, spec, hadamard = CASES[0]
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
    x = _data((2, 256, 128), seed=2)
    qkey, hkey = _keys(hadamard)
    fn = jax.jit(lambda v: fused_operand.split_operand(v, spec, hadamard, qkey, hkey, transpose=transpose,
                                                       interpret=interpret))
    xs = jax.device_put(x, NamedSharding(mesh, P(*sharding)))
    hlo = fn.lower(xs).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo and "collective-permute" not in hlo
    got = fn(xs)
    _assert_same(got, _composition(x, spec, hadamard, qkey, hkey, transpose))
    out = (sharding[0], sharding[2], sharding[1]) if transpose else sharding
    assert got[0].sharding.is_equivalent_to(NamedSharding(mesh, P(*out)), 3)


@pytest.mark.parametrize("recipe", ["mxfp4_bwd", "quartet"])
def test_dot_general_gradients_equal_the_unfused_path(recipe, monkeypatch):
    """The backward takes its operands from the fused pass: the gradients of the transposing path."""
    dn = (((1,), (0,)), ((), ()))
    x, w = _data((256, 128), seed=5), _data((128, 192), seed=6)

    def grads():
        loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=recipe, key=jax.random.key(1)).astype(jnp.float32) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)

    calls = []
    real = fused_operand.split_operand
    monkeypatch.setattr(fused_operand, "split_operand", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = grads()
    assert len(calls) == 4  # dgrad's dY and Wᵀ, wgrad's dYᵀ and Xᵀ
    monkeypatch.setattr(fused_operand, "fits", lambda *a: False)
    for g, r in zip(got, grads()):
        np.testing.assert_array_equal(_bits(g), _bits(r))


@pytest.mark.gpu
@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "as_is"])
@pytest.mark.parametrize("name,spec,hadamard", CASES, ids=IDS)
def test_compiled_kernel_on_gpu_gives_the_bits_of_xla_on_gpu(name, spec, hadamard, transpose):
    """Against the composition compiled by XLA on the same GPU. (Against the CPU, the rotation's
    float32 sums differ in order: for Hadamard-32, 1 element in 2M, with XLA's path as with the
    kernel's, H100 2026-11-23.)"""
    x = _data((1, 2048, 1024), seed=3)
    qkey, hkey = _keys(hadamard)
    fn = jax.jit(lambda v: fused_operand.split_operand(v, spec, hadamard, qkey, hkey, transpose=transpose))
    assert "__gpu$xla.gpu.triton" in fn.lower(x).compile().as_text()
    _assert_same(fn(x), jax.jit(lambda v: _composition(v, spec, hadamard, qkey, hkey, transpose))(x))


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["mxfp4_bwd", "quartet"])
def test_dot_general_gradients_on_gpu_use_the_kernel(recipe, monkeypatch):
    """On a GPU the backward runs the kernel, and its gradients are the transposing path's bits."""
    dn = (((1,), (0,)), ((), ()))
    x, w = _data((512, 256), seed=5), _data((256, 384), seed=6)
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=recipe, key=jax.random.key(1)).astype(jnp.float32) ** 2)  # noqa: E731
    fused = jax.jit(jax.grad(loss, argnums=(0, 1)))
    assert fused.lower(x, w).compile().as_text().count("__gpu$xla.gpu.triton") >= 4
    got = fused(x, w)
    monkeypatch.setattr(fused_operand, "fits", lambda *a: False)
    for g, r in zip(got, jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)):
        np.testing.assert_array_equal(_bits(g), _bits(r))
