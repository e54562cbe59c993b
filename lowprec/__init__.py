"""lowprec: low-precision (FP8/FP6/FP4/INT) LLM training in JAX/Flax."""
from lowprec import recipes
from lowprec.gemm import GemmConfig, OperandConfig, Recipe
from lowprec.gemm import dot_general as _gemm_dot_general
from lowprec.numerics import (
    FloatFormat, IntFormat, QArray, QuantSpec, dequantize, fake_quant, get_format, quantize,
)
from lowprec.numerics import specs  # noqa: F401  (lowprec.specs.get / names)
from lowprec.transforms import HadamardSpec

__version__ = "0.1.0"


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, recipe, key=None):
    """jax.lax.dot_general with its three GEMMs quantized by `recipe` (a name or a Recipe)."""
    return _gemm_dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type,
                             recipe=recipes.get(recipe), key=key)
