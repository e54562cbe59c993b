"""Peer FP8/FP4 GEMMs as benchmark dots: `dot(x, w, state) -> y` for x[M,K] @ w[K,N] in bf16.

Each builder imports its package lazily (a missing package becomes a "not installed" row) and
returns (dot, init) where init(x, w) gives the dot's extra state (Flax's delayed-scaling
metadata; () for stateless peers). The benchmark differentiates with respect to that state too,
so a peer's scale/amax-history updates are timed rather than dead-code eliminated.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DENSE_DIMS = (((1,), (0,)), ((), ()))


def flax_fp8():
    """flax.linen.Fp8DirectDotGeneralOp: per-tensor delayed scaling, e4m3 forward, e5m2 gradients."""
    import flax.linen as nn
    from flax.linen import fp8_ops

    op = nn.Fp8DirectDotGeneralOp()
    collection = fp8_ops.OVERWRITE_WITH_GRADIENT

    def init(x, w):
        return op.init(jax.random.key(0), x, w, DENSE_DIMS)[collection]

    def dot(x, w, state):
        return op.apply({collection: state}, x, w, DENSE_DIMS)

    return dot, init


def qwix_fp8():
    """qwix quantized training on a bias-free linen Dense: e4m3 weights and activations, e5m2 gradients."""
    import flax.linen as nn
    import qwix

    rule = qwix.QtRule(module_path=".*", weight_qtype=jnp.float8_e4m3fn, act_qtype=jnp.float8_e4m3fn,
                       bwd_qtype=jnp.float8_e5m2)

    def dot(x, w, state):
        dense = nn.Dense(w.shape[1], use_bias=False, dtype=x.dtype, param_dtype=w.dtype)
        return qwix.quantize_model(dense, qwix.QtProvider([rule])).apply({"params": {"kernel": w}}, x)

    return dot, lambda x, w: ()


def aqt_fp8():
    """AQT v2 `config_v4` with e4m3 forward and e5m2 backward operands, stochastic rounding off."""
    from aqt.jax.v2 import config as aqt_config

    cfg = aqt_config.config_v4(fwd_bits="e4m3", dlhs_bits="e5m2", drhs_bits="e5m2")
    aqt_config.set_stochastic_rounding(cfg, False, False, "jax.uniform")

    def dot(x, w, state):
        return cfg(x, w, DENSE_DIMS, preferred_element_type=x.dtype)

    return dot, lambda x, w: ()


def scaled_dot_general(mode: str):
    """jax.nn.scaled_dot_general with the `mode` ("mxfp8" / "nvfp4", global scale 1) config for all three GEMMs."""
    if not hasattr(jax.nn, "scaled_dot_general"):
        raise ModuleNotFoundError("jax.nn.scaled_dot_general", name="jax.nn.scaled_dot_general")
    configs = [jax.nn.get_scaled_dot_general_config(mode)] * 3

    def dot(x, w, state):
        return jax.nn.scaled_dot_general(x, w, DENSE_DIMS, preferred_element_type=x.dtype, configs=configs)

    return dot, lambda x, w: ()


PEERS = {
    "flax_fp8": flax_fp8,
    "qwix_fp8": qwix_fp8,
    "aqt_fp8": aqt_fp8,
    "jax_sdg_mxfp8": lambda: scaled_dot_general("mxfp8"),
    "jax_sdg_nvfp4": lambda: scaled_dot_general("nvfp4"),
}
