"""Numerics: number formats, rounding, scale rules, QuantSpec and quantize/dequantize."""
from lowprec.numerics.formats import FORMATS, FloatFormat, IntFormat, get_format
from lowprec.numerics.quantize import QArray, dequantize, fake_quant, quantize, quantize_dequantize, tensor_amax
from lowprec.numerics.rounding import ROUNDING_MODES, round_to_format
from lowprec.numerics.spec import QuantSpec

__all__ = [
    "FORMATS", "FloatFormat", "IntFormat", "get_format", "QArray", "dequantize", "fake_quant",
    "quantize", "quantize_dequantize", "tensor_amax", "ROUNDING_MODES", "round_to_format", "QuantSpec",
]
