"""Kept for old notes: same as `lowprec bench hadamard` (see lowprec/bench/hadamard.py)."""
import sys

from lowprec.cli import main

sys.exit(main(["bench", "hadamard", *sys.argv[1:]]))
