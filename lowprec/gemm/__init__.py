"""The quantized dot_general, its custom VJP, and the per-GEMM recipe configuration."""
from lowprec.gemm.config import DelayedScaling, GemmConfig, OperandConfig, Recipe
from lowprec.gemm.delayed import AmaxState, delayed_dot_general, init_state, next_state
from lowprec.gemm.dot_general import dot_general

__all__ = ["AmaxState", "DelayedScaling", "GemmConfig", "OperandConfig", "Recipe", "delayed_dot_general",
           "dot_general", "init_state", "next_state"]
