"""lowprec: low-precision (FP8/FP6/FP4/INT) LLM training in JAX/Flax."""
from lowprec.numerics import (
    FloatFormat, IntFormat, QArray, QuantSpec, dequantize, fake_quant, get_format, quantize,
)
from lowprec.numerics import specs  # noqa: F401  (lowprec.specs.get / names)

__version__ = "0.1.0"
