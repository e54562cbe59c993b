"""`lowprec predict FIT.json --compute C`: compute-optimal N*, D* per recipe and the best precision."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lowprec.fits.predict import COST_MODELS, allocate, best_precision
from lowprec.fits.results import read_fit_json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", type=Path, help="fit.json written by `lowprec fit`")
    parser.add_argument("--compute", type=float, required=True, help="budget C in 16-bit-equivalent FLOPs")
    parser.add_argument("--cost-model", choices=sorted(COST_MODELS), default="linear",
                        help="linear: cost = 6ND*P/16 (P = mean bits of bits_w, bits_a, bits_g); flat: 6ND")
    parser.add_argument("--reference-bits", type=float, help="bits that cost 1x (default 16)")
    parser.add_argument("--bits-columns", help="comma-separated bits columns averaged into P (default bits_w,bits_a,bits_g)")


def main(args: argparse.Namespace) -> int:
    cost = COST_MODELS[args.cost_model]
    if args.reference_bits is not None:
        cost = dataclasses.replace(cost, reference_bits=args.reference_bits)
    if args.bits_columns:
        cost = dataclasses.replace(cost, bits_columns=tuple(args.bits_columns.split(",")))
    fitset = read_fit_json(args.fit)
    allocations = allocate(fitset, args.compute, cost)
    print(f"law {fitset.law}, C = {args.compute:.4g} FLOPs, cost model {args.cost_model} "
          f"(power {cost.power:g}, reference {cost.reference_bits:g} bits, bits columns {','.join(cost.bits_columns)})")
    header = f"{'recipe':<16} {'bits':>6} {'cost x':>7} {'N*':>11} {'D*':>11} {'D*/N*':>8} {'loss':>9}"
    print(header)
    print("-" * len(header))
    for a in allocations:
        bits = "n/a" if a.bits is None else f"{a.bits:.3g}"
        print(f"{a.recipe:<16} {bits:>6} {a.cost_multiplier:>7.3g} {a.n_params:>11.4g} {a.tokens:>11.4g} "
              f"{a.tokens_per_param:>8.3g} {a.loss:>9.5g}")
    best = best_precision(allocations)
    bits = "" if best.bits is None else f" ({best.bits:.3g} bits)"
    print(f"compute-optimal precision: {best.recipe}{bits}, predicted loss {best.loss:.5g}")
    return 0
