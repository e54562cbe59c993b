"""Rotations applied to GEMM operands along the contraction axis before quantization."""
from lowprec.transforms.hadamard import (
    TE_FIXED_SIGNS_16,
    HadamardSpec,
    apply_hadamard,
    hadamard_matrix,
    inverse_hadamard,
    random_signs,
    rotation_matrix,
)

__all__ = [
    "TE_FIXED_SIGNS_16",
    "HadamardSpec",
    "apply_hadamard",
    "hadamard_matrix",
    "inverse_hadamard",
    "random_signs",
    "rotation_matrix",
]
