"""Benchmarks: quantize bandwidth, GEMM throughput (with peers), training-step MFU, Hadamard transforms,
all-reduce bandwidth and overlap across devices.

`lowprec bench <name>` (see cli.py); results are JSON rows under --out, tables on stdout.
"""
from lowprec.bench.cli import configure_parser, main

__all__ = ["configure_parser", "main"]
