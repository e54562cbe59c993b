"""What a compiled program really runs, read from its optimized HLO text: which GEMMs take FP8
operands, where a multi-device program's all-reduces sit among its kernels, and what each device
instruction reads and writes (for `bench.profile.attribute`).

XLA runs an FP8 dot either as a cuBLASLt custom call (`__cublas$lt$matmul$f8`) or, when its autotuner
finds it faster, as a Triton GEMM fusion (`gemm_fusion_dot...`) whose dot reads the FP8 operands
directly (seen on the H100 for some wgrad shapes, 2026-11-23). Both run on FP8 tensor cores.
"""
from __future__ import annotations

import dataclasses
import re
import statistics

CUBLASLT_FP8 = "__cublas$lt$matmul$f8"
_DOT = re.compile(r" dot\((%[^,()]+), (%[^,()]+)\)")
_CALL = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*\bcalls=%([^,\s]+)")


def _computations(hlo: str) -> dict[str, list[str]]:
    """{computation name (the entry computation's: "ENTRY"): its instruction lines, in order}."""
    bodies, current = {}, None
    for line in hlo.splitlines():
        if line.startswith(("%", "ENTRY ")) and line.rstrip().endswith("{"):
            current = "ENTRY" if line.startswith("ENTRY ") else line[1:].split(" ", 1)[0]
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


_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
          "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(" + "|".join(sorted(_BYTES, key=len, reverse=True)) + r")\[([\d,]*)\]")
_INSTR = re.compile(r"^(?:ROOT )?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
_GEMM = re.compile(r'custom_call_target="[^"]*(?:gemm|matmul)|^(?:ROOT )?%?(?:gemm_fusion|triton_gemm)')


def _nbytes(shape: str) -> int:
    """Bytes of the arrays in a shape (a tuple's elements summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _BYTES[dtype]
    return total


@dataclasses.dataclass(frozen=True)
class AllReduce:
    """One all-reduce of the entry computation. `start` and `done` count the kernels launched before it
    starts and before the program waits for it (equal for a synchronous all-reduce)."""

    name: str
    nbytes: int
    start: int
    done: int


@dataclasses.dataclass(frozen=True)
class CollectiveSchedule:
    """Where a scheduled program's all-reduces run among the kernels (fusions and custom calls) of its
    entry computation, in launch order; `last_gemm` counts the kernels before the last GEMM."""

    all_reduces: tuple[AllReduce, ...]
    kernels: int
    last_gemm: int | None

    def summary(self, min_bytes: int = 1024) -> str:
        big = [a for a in self.all_reduces if a.nbytes >= min_bytes]
        small = [a for a in self.all_reduces if a.nbytes < min_bytes]
        text = f"{len(small)} all-reduces under {min_bytes} B ({sum(a.start == a.done for a in small)} synchronous)"
        if big:
            spans = [a.done - a.start for a in big]
            text = (f"{len(big)} all-reduces of >= {min_bytes} B ({sum(a.nbytes for a in big) / 1e6:.0f} MB): first "
                    f"starts after kernel {min(a.start for a in big)} of {self.kernels} (last GEMM: kernel "
                    f"{self.last_gemm}), {sum(a.start < (self.last_gemm or 0) for a in big)} start before the last "
                    f"GEMM, median {statistics.median(spans):g} kernels between start and done; " + text)
        return text


def collective_schedule(hlo: str) -> CollectiveSchedule:
    """Read the all-reduces' places from a scheduled module's text (a compiled executable's `as_text()`).
    An async all-reduce's bytes are read from its `all-reduce-done`, whose shape is the result."""
    kernels, last_gemm, started, found = 0, None, {}, []
    for line in _computations(hlo).get("ENTRY", []):
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, op, rest = m.groups()
        if op == "all-reduce-start":
            started[name] = kernels
        elif op == "all-reduce-done":
            source = re.match(r"%?([\w.\-]+)", rest).group(1)
            found.append(AllReduce(source, _nbytes(shape), started.pop(source), kernels))
        elif op == "all-reduce":
            found.append(AllReduce(name, _nbytes(shape), kernels, kernels))
        elif op in ("fusion", "custom-call"):
            if _GEMM.search(line):
                last_gemm = kernels
            kernels += 1
    return CollectiveSchedule(tuple(sorted(found, key=lambda a: a.start)), kernels, last_gemm)


_NO_KERNEL = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all", "partition-id",
              "replica-id", "opt-barrier", "add-dependency"}
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_SOURCE = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Kernel:
    """An instruction of the entry computation that runs on the device (a fusion, custom call, copy,
    collective...): its result shape, the bytes it writes (result) and reads (operands, each counted
    whole), and the JAX op it came from (`source`, from the metadata)."""

    name: str
    op: str
    target: str
    shape: str
    out_bytes: int
    in_bytes: int
    source: str


def _operands(rest: str) -> list[str]:
    """Names of the operands in an instruction's text after `op(` (up to the matching parenthesis)."""
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return re.findall(r"%([\w.\-]+)", rest[:i])
    return re.findall(r"%([\w.\-]+)", rest)


def kernels(hlo: str) -> list[Kernel]:
    """The entry computation's device instructions in schedule order (a compiled executable's
    `as_text()`); an async pair counts once, at its start."""
    shapes, found = {}, []
    for line in _computations(hlo).get("ENTRY", []):
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, op, rest = m.groups()
        shapes[name] = shape
        if op in _NO_KERNEL or op.endswith("-done"):
            continue
        target, source = _TARGET.search(line), _SOURCE.search(line)
        found.append(Kernel(name, op, target.group(1) if target else "", shape, _nbytes(shape),
                            sum(_nbytes(shapes.get(o, "")) for o in _operands(rest)), source.group(1) if source else ""))
    return found
