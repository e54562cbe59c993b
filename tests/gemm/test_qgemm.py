"""The canonical quantized GEMM: execution-path choices and reuse of per-tensor codes."""
import jax
import jax.numpy as jnp
import numpy as np

import lowprec
from lowprec.gemm.qgemm import ROLE_IDS, SLOT_IDS, bf16_exact, fp8_eligible, reusable_codes, role_key
from lowprec.numerics.quantize import quantize, transpose_codes


def test_path_predicates():
    assert fp8_eligible(lowprec.specs.get("fp8_e4m3_tensor")) and fp8_eligible(lowprec.specs.get("fp8_e4m3_row"))
    assert not fp8_eligible(lowprec.specs.get("mxfp8")) and not fp8_eligible(None)
    assert bf16_exact(lowprec.specs.get("nvfp4")) and bf16_exact(lowprec.specs.get("mxfp8"))
    assert not bf16_exact(lowprec.specs.get("fp8_block128"))  # fp32 block scales: f32 emulation


def test_transposed_codes_equal_requantizing_the_transpose():
    w = jax.random.normal(jax.random.key(0), (3, 64, 48), jnp.bfloat16)
    spec = lowprec.specs.get("fp8_e4m3_tensor")
    assert reusable_codes(spec, spec) and not reusable_codes(spec, spec.replace(rounding="sr"))
    assert not reusable_codes(lowprec.specs.get("fp8_e4m3_row"), lowprec.specs.get("fp8_e4m3_row"))
    moved, fresh = transpose_codes(quantize(w, spec)), quantize(jnp.swapaxes(w, -1, -2), spec)
    np.testing.assert_array_equal(np.asarray(moved.data, np.float32), np.asarray(fresh.data, np.float32))
    np.testing.assert_array_equal(lowprec.dequantize(moved), lowprec.dequantize(fresh))


def _quantizations(fn, *args):
    """(#E4M3, #E5M2) quantizations in fn's jaxpr: each casts twice (RNE rounding, then storage)."""
    text = str(jax.make_jaxpr(fn)(*args))
    return text.count("new_dtype=float8_e4m3fn") // 2, text.count("new_dtype=float8_e5m2") // 2


def test_fp8_tensorwise_backward_reuses_forward_codes():
    """X and W are cast to FP8 once (forward) and dY once (shared by dgrad and wgrad)."""
    dn = (((1,), (0,)), ((), ()))
    loss = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe="fp8_tensorwise").astype(jnp.float32) ** 2)
    args = (jnp.ones((32, 64), jnp.bfloat16), jnp.ones((64, 16), jnp.bfloat16))
    assert _quantizations(jax.grad(loss, argnums=(0, 1)), *args) == (2, 1)
    rowwise = lambda a, b: jnp.sum(lowprec.dot_general(a, b, dn, recipe="fp8_rowwise").astype(jnp.float32) ** 2)
    assert _quantizations(jax.grad(rowwise, argnums=(0, 1)), *args) == (6, 0)  # row scales follow the layout


def test_role_keys_are_fold_ins_of_the_gemm_key():
    """role_key takes its key from one vectorized fold_in: the key fold_in(key, 8·role + slot) gives,
    distinct across every (role, slot); None stays None."""
    key = jax.random.key(11)
    seen = set()
    for role, r in ROLE_IDS.items():
        for slot, s in SLOT_IDS.items():
            got = jax.random.key_data(role_key(key, role, slot))
            np.testing.assert_array_equal(got, jax.random.key_data(jax.random.fold_in(key, 8 * r + s)))
            seen.add(tuple(np.asarray(got).tolist()))
    assert len(seen) == len(ROLE_IDS) * len(SLOT_IDS) and role_key(None, "dgrad", "lhs") is None
