"""What a compiled program really runs, read from its optimized HLO text: which GEMMs take FP8 operands.

XLA runs an FP8 dot either as a cuBLASLt custom call (`__cublas$lt$matmul$f8`) or, when its autotuner
finds it faster, as a Triton GEMM fusion (`gemm_fusion_dot...`) whose dot reads the FP8 operands
directly (seen on the H100 for some wgrad shapes, 2026-11-23). Both run on FP8 tensor cores.
"""
from __future__ import annotations

import re

CUBLASLT_FP8 = "__cublas$lt$matmul$f8"
_DOT = re.compile(r" dot\((%[^,()]+), (%[^,()]+)\)")
_CALL = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*\bcalls=%([^,\s]+)")


def _computations(hlo: str) -> dict[str, list[str]]:
    """{computation name: its instruction lines}."""
    bodies, current = {}, None
    for line in hlo.splitlines():
        if line.startswith("%") and line.rstrip().endswith("{"):
            current = line[1:].split(" ", 1)[0]
            bodies[current] = []
        elif line.startswith("}"):
            current = None
        elif current is not None and " = " in line:
            bodies[current].append(line.strip())
    return bodies


def _reads_fp8(body: list[str]) -> bool:
    """Whether a computation has a dot whose two operands are FP8 values (not converted first)."""
    types = {line.removeprefix("ROOT ").split(" = ", 1)[0]: line.split(" = ", 1)[1] for line in body}
    return any(m and all(types.get(op, "").startswith("f8") for op in m.groups())
               for m in (_DOT.search(line) for line in body))


def fp8_fusions(hlo: str) -> set[str]:
    """Names of the fusion instructions (Triton GEMMs) that call a computation with an FP8 dot."""
    fp8 = {name for name, body in _computations(hlo).items() if _reads_fp8(body)}
    return {m.group(1) for m in map(_CALL.match, hlo.splitlines()) if m and m.group(2) in fp8}


def count_fp8_gemms(hlo: str) -> int:
    """cuBLASLt FP8 calls plus Triton GEMM fusions on FP8 operands."""
    calls = sum(1 for line in hlo.splitlines() if f'custom_call_target="{CUBLASLT_FP8}"' in line)
    return calls + len(fp8_fusions(hlo))
