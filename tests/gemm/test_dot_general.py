"""The quantized dot_general: exactness without quantization, every preset against the float64
reference, estimators, stochastic-rounding statistics, transformations and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowprec
from lowprec.gemm.config import GemmConfig, OperandConfig, Recipe
from lowprec.numerics.spec import QuantSpec
from lowprec.transforms.hadamard import HadamardSpec

from . import reference

# An exact "quantizer" for bf16-representable N(0,1) inputs: E5M7 elements (bf16's 8 significant
# bits, range ample after a power-of-two tensor scale).
EXACT = QuantSpec(element="e5m7", scale_format="e8m0", scale_rule="floor")
EXACT_RECIPE = Recipe(name="exact", fprop=GemmConfig(lhs=OperandConfig(spec=EXACT), rhs=OperandConfig(spec=EXACT)),
                      dgrad=GemmConfig(lhs=OperandConfig(spec=EXACT)), wgrad=GemmConfig(rhs=OperandConfig(spec=EXACT)))

EINSUMS = {
    "btd,df->btf": ((2, 5, 8), (8, 6)),
    "bhqd,bhkd->bhqk": ((2, 3, 4, 8), (2, 3, 5, 8)),
    "bhqk,bhkd->bhqd": ((2, 3, 4, 5), (2, 3, 5, 8)),
    "ij,kj->ik": ((4, 8), (6, 8)),
    "abc,bcd->ad": ((3, 4, 5), (4, 5, 6)),
    "ibj,bjk->bik": ((4, 2, 8), (2, 8, 3)),
}


def _bf16_values(key, shape):
    return jax.random.normal(key, shape).astype(jnp.bfloat16).astype(jnp.float32)


@pytest.mark.parametrize("spec", list(EINSUMS))
@pytest.mark.parametrize("recipe", ["bf16", "exact"])
def test_unquantized_matches_lax_values_and_grads(spec, recipe):
    recipe = EXACT_RECIPE if recipe == "exact" else lowprec.recipes.get("bf16")
    ls, rs = EINSUMS[spec]
    x, w = _bf16_values(jax.random.key(0), ls), _bf16_values(jax.random.key(1), rs)
    ours = lambda a, b: jnp.einsum(spec, a, b, _dot_general=recipe.dot_general(), precision="highest")
    theirs = lambda a, b: jnp.einsum(spec, a, b, precision="highest")
    np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-6, atol=1e-6)
    ct = _bf16_values(jax.random.key(2), theirs(x, w).shape)
    g_ours = jax.grad(lambda a, b: jnp.sum(ours(a, b) * ct), argnums=(0, 1))(x, w)
    g_theirs = jax.grad(lambda a, b: jnp.sum(theirs(a, b) * ct), argnums=(0, 1))(x, w)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_wide_exponent_formats_do_not_overflow():
    recipe = lowprec.recipes.get("fp_e8m7_btensor_e8m0")
    x = jax.random.normal(jax.random.key(0), (16, 64))
    y = lowprec.dot_general(x, x.T, (((1,), (0,)), ((), ())), recipe=recipe)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(y, x @ x.T, rtol=0.02, atol=0.05)


def test_hadamard_without_quantization_cancels():
    had = GemmConfig(hadamard=HadamardSpec(size=16, signs="per_call"))
    recipe = Recipe(name="rht_only", fprop=had, dgrad=had, wgrad=had)
    x, w = jax.random.normal(jax.random.key(0), (32, 64)), jax.random.normal(jax.random.key(1), (64, 48))
    dn = (((1,), (0,)), ((), ()))
    y = lowprec.dot_general(x, w, dn, recipe=recipe, key=jax.random.key(5))
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-4)
    gx = jax.grad(lambda a: jnp.sum(lowprec.dot_general(a, w, dn, recipe=recipe, key=jax.random.key(5)) ** 2))(x)
    np.testing.assert_allclose(gx, 2 * (x @ w) @ w.T, rtol=1e-4, atol=1e-3)


def test_rht_lowers_gemm_error_on_outliers():
    def with_outliers(k, shape):  # 1% of elements 30x larger
        x = jax.random.normal(k, shape)
        return jnp.where(jax.random.bernoulli(jax.random.fold_in(k, 1), 0.01, shape), 30 * x, x)

    x, w = with_outliers(jax.random.key(0), (64, 256)), with_outliers(jax.random.key(1), (256, 64))
    mx = lowprec.specs.get("mxfp4")
    plain = GemmConfig(lhs=OperandConfig(spec=mx), rhs=OperandConfig(spec=mx))
    rotated = plain.replace(hadamard=HadamardSpec(size=32, signs="per_call"))
    dn = (((1,), (0,)), ((), ()))
    err = {}
    for name, cfg in (("plain", plain), ("rht", rotated)):
        y = lowprec.dot_general(x, w, dn, recipe=Recipe(name=name, fprop=cfg), key=jax.random.key(3))
        err[name] = float(jnp.linalg.norm(y - x @ w) / jnp.linalg.norm(x @ w))
    assert err["rht"] < 0.85 * err["plain"], err  # measured: 0.183 vs 0.252


STE_PRESETS = [n for n in lowprec.recipes.names() if lowprec.recipes.get(n).estimator == "ste"
               and lowprec.recipes.get(n).delayed is None
               and all(c.rhs.source == "hp" for c in lowprec.recipes.get(n).roles.values())] + ["fp_e3m2_b32_e8m0", "fp_e5m6_btensor_fp32"]


@pytest.mark.parametrize("name", STE_PRESETS)
def test_preset_matches_float64_reference(name):
    recipe = lowprec.recipes.get(name)
    x = jax.random.normal(jax.random.key(0), (128, 256))
    w = jax.random.normal(jax.random.key(1), (256, 128)) * 0.05
    dy = jax.random.normal(jax.random.key(2), (128, 128))
    key = jax.random.key(42)
    dn = (((1,), (0,)), ((), ()))
    f = jax.jit(lambda a, b: lowprec.dot_general(a, b, dn, recipe=recipe, key=key))
    y, vjp = jax.vjp(f, x, w)
    dx, dw = vjp(dy)
    y_ref = reference.forward(np.asarray(x), np.asarray(w).T, recipe, key)
    dx_ref, dwt_ref = reference.backward(np.asarray(x), np.asarray(w).T, np.asarray(dy), recipe, key)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dwt_ref.T)):
        scale = np.abs(want).max()
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=2e-6 * scale)


def _jaxpr_dots(fn, *args):
    """Every dot_general equation in fn's jaxpr, nested jaxprs included."""
    found = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn)
            for p in eqn.params.values():
                if hasattr(p, "jaxpr"):
                    walk(p.jaxpr if hasattr(p.jaxpr, "eqns") else p.jaxpr.jaxpr)
                elif hasattr(p, "eqns"):
                    walk(p)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def _jaxpr_dot_dtypes(fn, *args):
    return [tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in _jaxpr_dots(fn, *args)]


def test_fp8_tensorwise_runs_three_fp8_gemms_with_hybrid_formats():
    recipe = lowprec.recipes.get("fp8_tensorwise")
    dn = (((1,), (0,)), ((), ()))
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=recipe) ** 2)
    dots = _jaxpr_dot_dtypes(jax.grad(loss, argnums=(0, 1)), jnp.ones((32, 64), jnp.bfloat16), jnp.ones((64, 16), jnp.bfloat16))
    assert sorted(dots) == sorted([("float8_e4m3fn", "float8_e4m3fn"), ("float8_e5m2", "float8_e4m3fn"), ("float8_e5m2", "float8_e4m3fn")])


def test_pow2_fp8_gemms_write_bf16_directly_and_round_once():
    """fp8_tensorwise_pow2 emits bf16 from its FP8 GEMMs; with power-of-two scales that equals the
    float32-output result rounded once (bit for bit), values and both gradients."""
    recipe = lowprec.recipes.get("fp8_tensorwise_pow2")
    dn = (((1,), (0,)), ((), ()))
    ks = jax.random.split(jax.random.key(3), 3)
    x, w, dy = (jax.random.normal(k, s, jnp.bfloat16) * m for k, s, m in zip(ks, ((64, 128), (128, 32), (64, 32)), (3.0, 0.05, 1e-3)))

    def run(a, b, g, out):
        y, vjp = jax.vjp(lambda a, b: lowprec.dot_general(a, b, dn, preferred_element_type=out, recipe=recipe), a, b)
        return (y, *vjp(g))

    direct = jax.jit(run, static_argnums=3)(x, w, dy, jnp.bfloat16)
    wide = jax.jit(run, static_argnums=3)(*(t.astype(jnp.float32) for t in (x, w, dy)), jnp.float32)
    for got, want in zip(direct, wide):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want.astype(jnp.bfloat16), np.float32))
    grad = lambda r: jax.grad(lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=r).astype(jnp.float32)), argnums=(0, 1))
    out_types = lambda r: [str(e.params["preferred_element_type"]) for e in _jaxpr_dots(grad(r), x, w)]  # noqa: E731
    assert out_types(recipe) == ["bfloat16"] * 3
    assert out_types(lowprec.recipes.get("fp8_tensorwise")) == ["float32"] * 3  # absmax scales: f32 out, one rounding


def test_emulated_nvfp4_gemms_run_in_bf16_on_exact_e2m1_codes():
    recipe = lowprec.recipes.get("nvfp4")
    dn = (((1,), (0,)), ((), ()))
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=recipe, key=jax.random.key(0)) ** 2)
    eqns = _jaxpr_dots(jax.grad(loss, argnums=(0, 1)), jnp.ones((32, 64), jnp.bfloat16), jnp.ones((64, 32), jnp.bfloat16))
    # the three GEMMs, and the two RHT-16 rotations of wgrad's operands (a bf16 GEMM against ±1)
    gemms = [e for e in eqns if e.invars[1].aval.shape != (16, 16)]
    assert [tuple(str(v.aval.dtype) for v in e.invars) for e in gemms] == [("bfloat16", "bfloat16")] * 3
    assert len(eqns) == 5
    assert "float4_e2m1fn" in str(jax.make_jaxpr(jax.grad(loss))(jnp.ones((32, 64), jnp.bfloat16), jnp.ones((64, 32), jnp.bfloat16)))


def test_quartet_backward_uses_forward_quantized_tensors_and_clip_mask():
    recipe = lowprec.recipes.get("quartet")
    x = jax.random.normal(jax.random.key(0), (64, 64))
    w = jax.random.normal(jax.random.key(1), (64, 32))
    dy = jax.random.normal(jax.random.key(2), (64, 32))
    key = jax.random.key(9)
    dn = (((1,), (0,)), ((), ()))
    _, vjp = jax.vjp(lambda a, b: lowprec.dot_general(a, b, dn, recipe=recipe, key=key), x, w)
    dx, dw = vjp(dy)
    # reference: forward rotated/quantized operands, masks where |a| <= 6·step, backward on them
    from lowprec.numerics.quantize import dequantize, element_scale, quantize
    f = recipe.fprop
    h = np.asarray(lowprec.transforms.hadamard.rotation_matrix(f.hadamard, length=64), np.float64)
    H = np.kron(np.eye(2), h)
    a, b = np.asarray(x, np.float64) @ H, np.asarray(w, np.float64).T @ H
    qa, qb = quantize(jnp.asarray(a, jnp.float32), f.lhs.spec), quantize(jnp.asarray(b, jnp.float32), f.rhs.spec)
    mask_a = np.abs(a) <= 6 * np.asarray(element_scale(qa))
    mask_b = np.abs(b) <= 6 * np.asarray(element_scale(qb))
    assert 0.01 < 1 - mask_a.mean() < 0.5  # the QuEST scale really clips
    da = reference.gemm(np.asarray(dy), np.asarray(dequantize(qb)).T, recipe.dgrad, key, "dgrad")
    db = reference.gemm(np.asarray(dy).T, np.asarray(dequantize(qa)).T, recipe.wgrad, key, "wgrad")
    dx_ref, dwt_ref = (da * mask_a) @ H.T, (db * mask_b) @ H.T
    np.testing.assert_allclose(dx, dx_ref, atol=2e-5 * np.abs(dx_ref).max())
    np.testing.assert_allclose(dw, dwt_ref.T, atol=2e-5 * np.abs(dwt_ref).max())


def test_quest_trust_mask_zeroes_far_from_grid():
    recipe = lowprec.recipes.get("quest_w4a4")
    rot = np.asarray(lowprec.transforms.hadamard.rotation_matrix(recipe.fprop.hadamard, length=128))
    # row 0 becomes a single 40-sigma spike after the forward's Hadamard-128, far beyond 2.514·RMS
    x = jax.random.normal(jax.random.key(0), (16, 128)).at[0].add(40.0 * rot[3])
    w = jax.random.normal(jax.random.key(1), (128, 8))
    dn = (((1,), (0,)), ((), ()))
    _, vjp = jax.vjp(lambda a: lowprec.dot_general(a, w, dn, recipe=recipe), x)
    (dx,) = vjp(jnp.ones((16, 8)))
    plain = jnp.ones((16, 8)) @ w.T
    # rows without outliers mostly keep their gradient; the outlier row loses part of it
    assert float(jnp.mean(jnp.isclose(dx[1:], plain[1:], atol=1e-3))) < 1.0
    assert float(jnp.linalg.norm(dx[0])) < float(jnp.linalg.norm(plain[0]))


def test_sr_backward_is_unbiased_and_uses_the_key():
    recipe = lowprec.recipes.get("mxfp4_bwd")
    x = jax.random.normal(jax.random.key(0), (64, 64))
    w = jax.random.normal(jax.random.key(1), (64, 64)) * 0.1
    dy = jax.random.normal(jax.random.key(2), (64, 64))
    dn = (((1,), (0,)), ((), ()))

    def grads(key):
        _, vjp = jax.vjp(lambda a, b: lowprec.dot_general(a, b, dn, recipe=recipe, key=key), x, w)
        return vjp(dy)

    keys = jax.random.split(jax.random.key(3), 256)
    dxs, dws = jax.jit(jax.vmap(grads))(keys)
    exact_dx, exact_dw = dy @ w.T, x.T @ dy
    one_err = float(jnp.linalg.norm(dxs[0] - exact_dx) / jnp.linalg.norm(exact_dx))
    mean_err = float(jnp.linalg.norm(dxs.mean(0) - exact_dx) / jnp.linalg.norm(exact_dx))
    assert mean_err < one_err / 8  # ~1/sqrt(256) = 1/16 for an unbiased estimator
    mean_err_w = float(jnp.linalg.norm(dws.mean(0) - exact_dw) / jnp.linalg.norm(exact_dw))
    assert mean_err_w < 0.05
    assert not np.array_equal(dxs[0], dxs[1])  # different keys really give different gradients
    one = jax.jit(grads)
    np.testing.assert_array_equal(one(keys[0])[0], one(keys[0])[0])  # same key, same gradient, bitwise
    np.testing.assert_allclose(one(keys[0])[0], dxs[0], rtol=1e-6, atol=1e-6)  # vmapped program agrees


def test_jit_vmap_remat_and_sharding():
    recipe = lowprec.recipes.get("nvfp4")
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (4, 32, 64))
    w = jax.random.normal(jax.random.key(2), (64, 32))
    f = lambda a, b: jnp.einsum("btd,df->btf", a, b, _dot_general=recipe.dot_general(key))
    y = f(x, w)
    np.testing.assert_array_equal(jax.jit(f)(x, w), y)
    per_example = lambda a, b: jnp.einsum("td,df->tf", a, b, _dot_general=recipe.dot_general(key))
    vmapped = jax.vmap(per_example, in_axes=(0, None))(x, w)
    looped = jnp.stack([per_example(x[i], w) for i in range(x.shape[0])])
    np.testing.assert_array_equal(vmapped, looped)
    g = jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2), argnums=1)(x, w)
    g_remat = jax.grad(lambda a, b: jnp.sum(jax.checkpoint(f)(a, b) ** 2), argnums=1)(x, w)
    np.testing.assert_array_equal(g, g_remat)
    devices = jax.devices()
    assert len(devices) >= 4, "tests run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
    mesh = jax.sharding.Mesh(np.array(devices[:4]), ("data",))
    xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    g_sharded = jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2), argnums=1))(xs, w)
    np.testing.assert_allclose(g_sharded, g, rtol=1e-5, atol=1e-5 * float(jnp.abs(g).max()))


def test_bad_inputs():
    x, w = jnp.ones((4, 32)), jnp.ones((32, 8))
    good = (((1,), (0,)), ((), ()))
    with pytest.raises(ValueError, match="contracting dimensions differ"):
        lowprec.dot_general(x, jnp.ones((16, 8)), good, recipe="fp8_tensorwise")
    with pytest.raises(ValueError, match="dimension_numbers"):
        lowprec.dot_general(x, w, ((1, 0),), recipe="fp8_tensorwise")
    with pytest.raises(ValueError, match="invalid for an operand of rank 2"):
        lowprec.dot_general(x, w, (((2,), (0,)), ((), ())), recipe="fp8_tensorwise")
    with pytest.raises(ValueError, match="unknown recipe 'fp3'; valid names: bf16"):
        lowprec.dot_general(x, w, good, recipe="fp3")
    with pytest.raises(ValueError, match="block size 32 does not divide axis 2 of length 8"):
        lowprec.dot_general(jnp.ones((4, 8)), jnp.ones((8, 8)), good, recipe="mxfp4")
    with pytest.raises(ValueError, match="pass key=jax.random.key"):
        lowprec.dot_general(x, w, good, recipe="nvfp4")
    for name in ("fp8_rowwise", "mxfp8", "bf16"):
        with pytest.raises(ValueError, match=f"lhs_amax is for recipes .* recipe {name!r}"):
            lowprec.dot_general(x, w, good, recipe=name, lhs_amax=jnp.float32(1))


@pytest.mark.parametrize("name", ["fp8_tensorwise", "fp8_tensorwise_pow2"])
def test_lhs_amax_taken_by_the_caller_gives_the_same_bits(name):
    """Several products of one input with lhs_amax = tensor_amax(x): values and gradients bit for bit."""
    from lowprec.numerics.quantize import tensor_amax

    x = jax.random.normal(jax.random.key(0), (2, 16, 64), jnp.bfloat16)
    ws = [(0.1 * jax.random.normal(jax.random.key(i), (64, 32))).astype(jnp.bfloat16) for i in (1, 2)]
    dn = (((2,), (0,)), ((), ()))

    def loss(x, ws, share):
        amax = tensor_amax(jax.lax.stop_gradient(x)) if share else None
        ys = [lowprec.dot_general(x, w, dn, recipe=name, lhs_amax=amax).astype(jnp.float32) for w in ws]
        return jnp.sum(ys[0] * ys[1])

    ref, got = (jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(x, ws, share) for share in (False, True))
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("name,out_type", [("fp8_tensorwise", "f32"), ("fp8_tensorwise_pow2", "bf16")])
def test_fp8_tensorwise_compiles_to_cublaslt_fp8_on_gpu(name, out_type):
    recipe = lowprec.recipes.get(name)
    dn = (((1,), (0,)), ((), ()))
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe=recipe).astype(jnp.float32))
    # at 8192^3 XLA hands FP8 dots to cuBLASLt (measured; small shapes may go to Triton)
    args = (jax.ShapeDtypeStruct((8192, 8192), jnp.bfloat16), jax.ShapeDtypeStruct((8192, 8192), jnp.bfloat16))
    # value_and_grad: with grad alone XLA may drop the forward GEMM
    hlo = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile().as_text()
    calls = [line for line in hlo.splitlines() if 'custom_call_target="__cublas$lt$matmul$f8"' in line and " = (" in line]
    assert len(calls) == 3
    # power-of-two scales: cuBLASLt writes bf16 with the scales folded in; others write f32
    assert [c.split(" = (")[1].split("[")[0] for c in calls] == [out_type] * 3
    # power-of-two scales: X, W and dY each cast once into both layouts by the fused Pallas kernel
    assert hlo.count("__gpu$xla.gpu.triton") == (3 if out_type == "bf16" else 0)
    fwd = jax.jit(lambda a, b: lowprec.dot_general(a, b, dn, recipe=recipe)).lower(*args).compile().as_text()
    assert fwd.count("__gpu$xla.gpu.triton") == 0  # inference writes no transposed codes
