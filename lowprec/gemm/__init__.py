"""The quantized dot_general, its custom VJP, and the per-GEMM recipe configuration."""
from lowprec.gemm.config import GemmConfig, OperandConfig, Recipe
from lowprec.gemm.dot_general import dot_general

__all__ = ["GemmConfig", "OperandConfig", "Recipe", "dot_general"]
