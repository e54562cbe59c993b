"""`lowprec sweep SWEEP.yaml [--dry-run] [--csv] [--shard i/n] [section.key=value ...]`.

Overrides refine the base training config of every run. Several processes may share one sweep
directory, one per device: `CUDA_VISIBLE_DEVICES=i lowprec sweep S.yaml --shard i/n` takes every
n-th run starting at i. Exit status: 0 when every run of this shard is ok or diverged, 1 when some
failed (recorded with their error; rerun to retry them), 2 for a bad sweep file or override.
"""
from __future__ import annotations

import argparse
import sys

EXIT_FAILED_RUNS = 1
EXIT_CONFIG_ERROR = 2


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--shard expects i/n with 0 <= i < n, got {text!r}")
    return int(index), int(count)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML file")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides of the base config")
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs and their state; train nothing")
    parser.add_argument("--csv", action="store_true", help="also write runs.csv next to runs.jsonl")
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n",
                        help="run every n-th planned run starting at i (one process per device)")
    # `lowprec sweep S.yaml --csv k=v`: plain parse_args rejects positionals after an option
    parser.parse_args = parser.parse_intermixed_args


def main(args: argparse.Namespace) -> int:
    from lowprec.sweeps.runner import run_sweep
    from lowprec.sweeps.spec import load_sweep

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"lowprec sweep: error: overrides must look like section.key=value, got {', '.join(bad)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        sweep = load_sweep(args.sweep)
        rows = run_sweep(sweep, overrides=tuple(args.overrides), shard_index=args.shard[0],
                         shard_count=args.shard[1], dry_run=args.dry_run, csv=args.csv)
    except ValueError as e:
        print(f"lowprec sweep: error: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.dry_run:
        return 0
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "diverged", "failed")}
    print(f"runs table {sweep.out}/runs.jsonl: {len(rows)} rows ({', '.join(f'{k} {v}' for k, v in counts.items())})"
          f"; fit with: lowprec fit {sweep.out}/runs.jsonl --law chinchilla")
    return EXIT_FAILED_RUNS if counts["failed"] else 0
