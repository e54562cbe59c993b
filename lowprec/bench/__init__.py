"""Benchmarks: quantize bandwidth, GEMM throughput (with peers), training-step MFU, Hadamard transforms.

`lowprec bench <name>` (see cli.py); results are JSON rows under --out, tables on stdout.
"""
from lowprec.bench.cli import configure_parser, main

__all__ = ["configure_parser", "main"]
