"""An independent reference for a recipe's three GEMMs on 2-D operands, in float64 numpy.

x [M, K] (activations), w [N, K] (weights, contraction-major), dy [M, N]. Rotations use the
(separately tested) Hadamard transform, quantization fake_quant, products float64; what is
re-derived here is which operand, axis, spec and key each GEMM uses.
"""
import jax.numpy as jnp
import numpy as np

from lowprec.gemm.qgemm import role_key
from lowprec.numerics.quantize import fake_quant
from lowprec.transforms.hadamard import apply_hadamard


def _rot(x, cfg, key, role):
    """x @ R along the last axis (R block-diagonal), as float32 like the operands it feeds."""
    k = role_key(key, role, "hadamard") if cfg.hadamard.needs_key else None
    return np.asarray(apply_hadamard(jnp.asarray(x, jnp.float32), cfg.hadamard, axis=-1, key=k))


def _fq(x, op, key, role, slot):
    if op.spec is None:
        return np.asarray(x, np.float64)
    k = role_key(key, role, slot) if op.spec.rounding == "sr" else None
    return np.asarray(fake_quant(jnp.asarray(x, jnp.float32), op.spec, key=k, axis=-1), np.float64)


def gemm(a, b, cfg, key, role):
    """a[P, C] · b[Q, C]ᵀ with the role's rotation and quantization."""
    if cfg.hadamard is not None:
        a, b = _rot(a, cfg, key, role), _rot(b, cfg, key, role)
    return _fq(a, cfg.lhs, key, role, "lhs") @ _fq(b, cfg.rhs, key, role, "rhs").T


def forward(x, w, recipe, key):
    return gemm(x, w, recipe.fprop, key, "fprop")


def backward(x, w, dy, recipe, key):
    """(dx, dw) for straight-through recipes with high-precision backward sources."""
    dx = gemm(dy, np.asarray(w).T, recipe.dgrad, key, "dgrad")  # [M,N]·[K,N]ᵀ
    dw = gemm(np.asarray(dy).T, np.asarray(x).T, recipe.wgrad, key, "wgrad")  # [N,M]·[K,M]ᵀ
    return dx, dw
