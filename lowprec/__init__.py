"""lowprec: low-precision (FP8/FP6/FP4/INT) LLM training in JAX/Flax.

Public names are imported lazily, so that `lowprec fit` and other JAX-free tools start fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # numerics
    "FloatFormat": "lowprec.numerics", "IntFormat": "lowprec.numerics", "QArray": "lowprec.numerics",
    "QuantSpec": "lowprec.numerics", "quantize": "lowprec.numerics", "dequantize": "lowprec.numerics",
    "fake_quant": "lowprec.numerics", "get_format": "lowprec.numerics", "tensor_amax": "lowprec.numerics",
    # transforms
    "HadamardSpec": "lowprec.transforms",
    # gemm
    "Recipe": "lowprec.gemm", "GemmConfig": "lowprec.gemm", "OperandConfig": "lowprec.gemm",
    # Flax integration
    "Rule": "lowprec.integration", "quantize_model": "lowprec.integration", "describe": "lowprec.integration",
    "quant_key": "lowprec.integration", "quant_error": "lowprec.integration",
    "quant_diagnostics": "lowprec.integration",
}
_SUBMODULES = {"specs": "lowprec.numerics.specs", "recipes": "lowprec.recipes", "nnx": "lowprec.nnx",
               "transforms": "lowprec.transforms", "fits": "lowprec.fits"}


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, recipe, key=None,
                lhs_amax=None):
    """jax.lax.dot_general with its three GEMMs quantized by `recipe` (a name or a Recipe); `lhs_amax`
    as in lowprec.gemm.dot_general."""
    from lowprec import recipes
    from lowprec.gemm import dot_general as gemm_dot_general

    return gemm_dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type,
                            recipe=recipes.get(recipe), key=key, lhs_amax=lhs_amax)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'lowprec' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS) + list(_SUBMODULES))


__all__ = ["dot_general", *_EXPORTS, *_SUBMODULES]
