"""The fused backward operand: (transpose,) Hadamard, block quantization and split scales in one pass.

The Pallas kernel runs here in interpret mode (CPU), and its XLA twin compiled, and both must give
the bits of the composition they replace ([swapaxes ->] apply_hadamard -> quantize -> split_scales)
for every recipe operand they serve, with non-finite blocks and sharded inputs. On GPUs (marked)
the kernel runs compiled, against the composition compiled for the same GPU.
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import lowprec
from lowprec.gemm import fused_operand
from lowprec.numerics.quantize import quantize, split_scales
from lowprec.transforms.hadamard import HadamardSpec, apply_hadamard

# (name, spec, hadamard): each backward operand the kernel serves, plus one without a rotation
_OPERANDS = (("wgrad", "lhs"), ("wgrad", "rhs"), ("dgrad", "lhs"), ("dgrad", "rhs"))
CASES = [(f"{r}.{role}.{slot}", getattr(getattr(lowprec.recipes.get(r), role), slot).spec,
          getattr(lowprec.recipes.get(r), role).hadamard)
         for r in ("mxfp4_bwd", "quartet", "nvfp4") for role, slot in _OPERANDS[:3 if r == "nvfp4" else 4]]
CASES += [(f"{r}.{role}.{slot}", getattr(getattr(lowprec.recipes.get(r), role), slot).spec,
           getattr(lowprec.recipes.get(r), role).hadamard)  # one operand of each other served format
          for r, role, slot in (("mxfp8", "dgrad", "lhs"), ("mxfp6", "wgrad", "rhs"), ("mxfp4", "wgrad", "lhs"),
                                ("fp4_all_the_way", "wgrad", "lhs"))]
CASES.append(("mxfp4_sr.plain", dataclasses.replace(lowprec.specs.get("mxfp4"), rounding="sr"), None))
IDS = [c[0] for c in CASES]
NON_FINITE = [c for c in CASES if c[0] in ("mxfp4_bwd.wgrad.lhs", "quartet.wgrad.lhs", "nvfp4.wgrad.rhs",
                                           "nvfp4.dgrad.lhs", "mxfp4_sr.plain")]


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
    nvfp4 = lowprec.recipes.get("nvfp4").dgrad  # its Wᵀ: 16x16 tiles, whose scales span both axes
    assert not fused_operand.fits((256, 128), jnp.bfloat16, nvfp4.rhs.spec, nvfp4.hadamard)


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
@pytest.mark.parametrize("name,spec,hadamard", NON_FINITE, ids=[c[0] for c in NON_FINITE])
def test_non_finite_blocks_match(name, spec, hadamard, transpose):
    """A NaN or Inf poisons its own block (NaN operand values) as the composition does, and no other
    (two levels: its tensor amax too, so every scale); Triton's max drops NaNs, so the kernel takes
    integer maxima of the bits."""
    x = _data((1, 128, 128), seed=1).at[0, 3, 5].set(jnp.nan).at[0, 70, 64].set(jnp.inf)
    qkey, hkey = _keys(hadamard)
    got = fused_operand.split_operand(x, spec, hadamard, qkey, hkey, transpose=transpose, interpret=True)
    ref = _composition(x, spec, hadamard, qkey, hkey, transpose)
    assert 0 < np.isnan(np.asarray(got[0], np.float32)).sum() <= 2 * 64
    _assert_same(got, ref)


@pytest.mark.parametrize("where", ["inf", "zeros"])
def test_two_level_tensor_amax_edge_cases(where):
    """NVFP4's chain where the tensor amax is Inf (S_enc = 0) or zero (S_enc = 1): the statistics
    pass feeds the same scales as the composition's max of block amaxes."""
    _, spec, hadamard = next(c for c in CASES if c[0] == "nvfp4.wgrad.lhs")
    x = jnp.zeros((1, 64, 128), jnp.bfloat16) if where == "zeros" else _data((1, 64, 128), seed=4).at[0, 9, 9].set(jnp.inf)
    qkey, hkey = _keys(hadamard)
    for interpret in (True, False):
        got = fused_operand.split_operand(x, spec, hadamard, qkey, hkey, transpose=True, interpret=interpret)
        _assert_same(got, _composition(x, spec, hadamard, qkey, hkey, True))


def test_fits_and_the_error_for_operands_it_does_not_serve():
    _, spec, had = CASES[0]
    assert fused_operand.fits((4, 128, 64), jnp.bfloat16, spec, had)
    assert not fused_operand.fits((4, 128, 64), jnp.float32, spec, had)  # the rotation's bits need bf16
    assert not fused_operand.fits((4, 96, 64), jnp.bfloat16, spec, had)  # tiles of 64 do not divide 96
    assert not fused_operand.fits((128, 64), jnp.bfloat16, spec, HadamardSpec(size=128))  # wider than a tile
    for other in ("nvfp4_tile16", "fp8_e4m3_tensor", "mxint8"):  # tiles; per tensor; an integer format
        assert not fused_operand.fits((128, 64), jnp.bfloat16, lowprec.specs.get(other), None)
    quest = lowprec.recipes.get("quartet").fprop.lhs.spec  # sigma-based scales: the std in the tile too
    assert fused_operand.fits((128, 64), jnp.bfloat16, quest, None)
    for field, value in (("scale_format", "bf16"), ("rounding", "half_away")):
        assert not fused_operand.fits((128, 64), jnp.bfloat16, dataclasses.replace(spec, **{field: value}), None)
    with pytest.raises(ValueError, match="no kernel for a float32 .* check fits"):
        fused_operand.split_operand(jnp.ones((128, 64), jnp.float32), spec, had, jax.random.key(0), transpose=True)


_QUARTET = lowprec.recipes.get("quartet").fprop
FORWARD = [("quartet.fprop", _QUARTET.lhs.spec, _QUARTET.hadamard),
           ("quest_sigma.plain", _QUARTET.lhs.spec, None),
           ("mxfp4_sr.h16", dataclasses.replace(lowprec.specs.get("mxfp4"), rounding="sr"), HadamardSpec(size=16))]


def _rotated_quantized(x, spec, hadamard, qkey, hkey):
    """(rotated values, their QArray's split inner, the QArray's block scales), by composition."""
    v = apply_hadamard(x, hadamard, axis=-1, key=hkey) if hadamard is not None else x
    q = quantize(v, spec, key=qkey, axis=-1)
    return v, split_scales(q)[0].astype(jnp.bfloat16), q.scale.astype(jnp.float32)


def _packed_mask(v, scale, spec):
    """|v| <= the largest code times its block's scale, packed by numpy (little bit order, little-endian words)."""
    bound = np.repeat(np.asarray(scale, np.float32) * np.float32(spec.element.max_value), spec.block, axis=-1)
    return np.packbits(np.abs(np.asarray(v, np.float32)) <= bound, axis=-1, bitorder="little").view("<u4")


def _unpacked(words):
    return np.unpackbits(np.asarray(words).astype("<u4").view(np.uint8), axis=-1, bitorder="little")


def _forward_reference(x, spec, hadamard, qkey, hkey):
    """Written out here: (inner, packed mask) from the composition's rotated values and QArray."""
    v, inner, scale = _rotated_quantized(x, spec, hadamard, qkey, hkey)
    return inner, jnp.asarray(_packed_mask(v, scale, spec).astype(np.uint32))


def _assert_forward_same(got, ref):
    """The inner operands' bits (NaNs where NaNs) and the mask words equal."""
    (inner, words), (rinner, rwords) = got, ref
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
    gn, rn = np.isnan(np.asarray(inner, np.float32)), np.isnan(np.asarray(rinner, np.float32))
    np.testing.assert_array_equal(gn, rn)
    np.testing.assert_array_equal(_bits(inner)[~gn], _bits(rinner)[~rn])
    assert words.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(words), np.asarray(rwords))


@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("name,spec,hadamard", FORWARD, ids=[c[0] for c in FORWARD])
def test_forward_operand_gives_the_bits_of_the_composition(name, spec, hadamard, interpret):
    """Rotated values, inner operand and block scales, with a NaN and an Inf block; leading axes flatten."""
    x = _data((2, 3, 64, 192), seed=9).at[0, 1, 3, 5].set(jnp.nan).at[1, 2, 60, 64].set(jnp.inf)
    qkey = jax.random.key(5) if spec.rounding == "sr" else None
    got = jax.jit(lambda v: fused_operand.forward_operand(v, spec, hadamard, qkey, interpret=interpret))(x)
    _assert_forward_same(got, _forward_reference(x, spec, hadamard, qkey, None))
    assert got[1].shape == (2, 3, 64, 192 // 32) and 0.9 < _unpacked(got[1]).mean() < 1  # a few clipped; NaN blocks none
    with pytest.raises(ValueError, match="two-level"):
        fused_operand.forward_operand(x, lowprec.specs.get("nvfp4"), None, None)


@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("sharding", [("data", None, None), (None, "data", None), (None, None, "data")])
def test_sharded_forward_operand_runs_per_shard(sharding, interpret, partitioner):
    _, spec, hadamard = FORWARD[0]
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
    x = _data((2, 256, 128), seed=2)
    fn = jax.jit(lambda v: fused_operand.forward_operand(v, spec, hadamard, None, interpret=interpret))
    xs = jax.device_put(x, NamedSharding(mesh, P(*sharding)))
    hlo = fn.lower(xs).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo and "collective-permute" not in hlo
    got = fn(xs)
    _assert_forward_same(got, _forward_reference(x, spec, hadamard, None, None))
    assert all(g.sharding.is_equivalent_to(NamedSharding(mesh, P(*sharding)), 3) for g in got)


@pytest.mark.parametrize("transpose", [True, False], ids=["transposed", "as_is"])
@pytest.mark.parametrize("interpret", [True, False], ids=["pallas_interpret", "xla"])
@pytest.mark.parametrize("sharding", [("data", None, None), (None, "data", None), (None, None, "data"),
                                      (None, "data", "model")])
@pytest.mark.parametrize("case", ["mxfp4_bwd.wgrad.lhs", "nvfp4.wgrad.lhs"])
def test_sharded_operand_runs_per_shard(case, sharding, interpret, transpose, partitioner):
    """Each device runs the kernel on its shard (no gather; two levels: the statistics pass too, then
    a scalar all-reduce); stochastic rounding draws at the global indices, so the bits are the
    unsharded ones, and a transposed output swaps T's and C's shardings."""
    _, spec, hadamard = next(c for c in CASES if c[0] == case)
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


@pytest.mark.parametrize("recipe,served", [("mxfp4_bwd", 4), ("quartet", 4), ("nvfp4", 3), ("mxfp8", 4)])
def test_dot_general_gradients_equal_the_unfused_path(recipe, served, monkeypatch):
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
    assert len(calls) == served  # dgrad's dY and Wᵀ (not NVFP4's 16x16 tiles), wgrad's dYᵀ and Xᵀ
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
@pytest.mark.parametrize("name,spec,hadamard", FORWARD, ids=[c[0] for c in FORWARD])
def test_compiled_forward_kernel_on_gpu_matches_xla_on_gpu(name, spec, hadamard):
    """Against the composition compiled by XLA on the same GPU. QuEST's block std sums in another
    order there, so a block whose 2.92·sigma/6 sits on a power of two may take the neighbouring
    scale (its codes and mask then differ): allowed in < 1e-4 of the blocks; every other block has
    the composition's codes and mask bits."""
    x = _data((1, 2048, 1024), seed=3)
    qkey = jax.random.key(5) if spec.rounding == "sr" else None
    fn = jax.jit(lambda v: fused_operand.forward_operand(v, spec, hadamard, qkey))
    assert "__gpu$xla.gpu.triton" in fn.lower(x).compile().as_text()
    inner, words = fn(x)
    v, rinner, scale = jax.jit(lambda v: _rotated_quantized(v, spec, hadamard, qkey, None))(x)
    blocks = lambda a: a.reshape(a.shape[:-1] + (-1, spec.block))  # noqa: E731
    same = (blocks(_bits(inner)) == blocks(_bits(rinner))).all(-1)
    assert same.mean() > 1 - 1e-4
    got, want = _unpacked(words), _unpacked(_packed_mask(v, scale, spec))
    np.testing.assert_array_equal(blocks(got)[same], blocks(want)[same])


@pytest.mark.gpu
def test_kernel_division_and_scale_cast_are_exact_on_gpu():
    """The compiled kernel's scale arithmetic by instructions (PTX div.rn, the FP8 cast) against
    numpy's IEEE float32 quotients and ml_dtypes' E4M3 cast: every bf16 pattern as 1's divisor and
    as a scale, and random pairs over 2^±60."""
    from jax.experimental import pallas as pl

    rng = np.random.default_rng(0)
    every = np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    rand = lambda: (rng.standard_normal(3 * 2**16) * np.exp2(rng.integers(-60, 60, 3 * 2**16)))  # noqa: E731
    a = np.concatenate([np.ones(2**16), rand()]).astype(np.float32).reshape(512, 512)
    b = np.concatenate([every, rand()]).astype(np.float32).reshape(512, 512)
    s = np.minimum(np.abs(b), 448.0)  # a scale as group_scales casts it: in [0, 448], or NaN

    def kernel(a_ref, b_ref, s_ref, q_ref, c_ref):
        q_ref[...] = fused_operand._ieee_divide(a_ref[...], b_ref[...])
        c_ref[...] = fused_operand._hardware_cast(s_ref[...], "ue4m3", portable=True)

    tile = pl.BlockSpec((64, 64), lambda i, j: (i, j))
    q, c = pl.pallas_call(kernel, grid=(8, 8), in_specs=[tile] * 3, out_specs=[tile, tile],
                          out_shape=[jax.ShapeDtypeStruct(a.shape, jnp.float32)] * 2)(a, b, s)
    with np.errstate(all="ignore"):
        want_q = a / b
    want_c = s.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    for got, want, of in ((np.asarray(q), want_q, b), (np.asarray(c), want_c, s)):
        bad = ~((got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want)))
        assert not bad.any(), (bad.sum(), of[bad][:6], got[bad][:6], want[bad][:6])


@pytest.mark.gpu
@pytest.mark.parametrize("recipe,served", [("mxfp4_bwd", 4), ("quartet", 4), ("nvfp4", 3 + 2)])
def test_dot_general_gradients_on_gpu_use_the_kernel(recipe, served, monkeypatch):
    """On a GPU the backward runs the kernel, and its gradients are the transposing path's bits."""
    dn = (((1,), (0,)), ((), ()))
    x, w = _data((512, 256), seed=5), _data((256, 384), seed=6)
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=recipe, key=jax.random.key(1)).astype(jnp.float32) ** 2)  # noqa: E731
    fused = jax.jit(jax.grad(loss, argnums=(0, 1)))
    assert fused.lower(x, w).compile().as_text().count("__gpu$xla.gpu.triton") >= served  # NVFP4: + 2 amax passes
    got = fused(x, w)
    monkeypatch.setattr(fused_operand, "fits", lambda *a: False)
    for g, r in zip(got, jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)):
        np.testing.assert_array_equal(_bits(g), _bits(r))
