"""`lowprec bench {quantize,gemm,train,hadamard,comm,report}`: run one benchmark, or print saved tables.

Every benchmark prints a line per finished case, writes all rows to DIR/<name>.json after each
case when --out DIR is given (so a run stopped by a time limit keeps what it finished), and
prints its table last. `--small` selects CPU smoke-test sizes. `--budget-s` skips the cases
that would start after that many seconds (gemm, train), so the table is still printed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

BENCHES = ("quantize", "gemm", "train", "hadamard", "comm")


def _names(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _sizes(text: str) -> list[float]:
    """Comma-separated positive numbers (argparse names the option when one does not parse)."""
    sizes = [float(t) for t in _names(text)]
    if not sizes or any(not v > 0 for v in sizes):
        raise ValueError(text)
    return sizes


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--small", action="store_true", help="CPU smoke-test sizes")
    common.add_argument("--out", help="directory for <bench>.json (rewritten after every case)")
    common.add_argument("--reps", type=int, default=20, help="timed calls per case; the median is reported")
    common.add_argument("--seed", type=int, default=0, help="jax.random key seed of the random inputs")

    q = sub.add_parser("quantize", parents=[common], help="quantize(+dequantize) GB/s per spec vs a device copy")
    q.add_argument("--specs", type=_names, default=None, help="comma-separated spec names (default: all presets)")
    q.add_argument("--sizes-mib", type=_sizes, default=None, help="bf16 tensor sizes in MiB (default: 64,256)")

    g = sub.add_parser("gemm", parents=[common], help="GEMM TFLOP/s: bf16, raw fp8, lowprec recipes, peers")
    g.add_argument("--recipes", type=_names, default=None, help="comma-separated recipes (default: all; '' for none)")
    g.add_argument("--peers", type=_names, default=None, help="comma-separated peers (default: all; '' for none)")
    g.add_argument("--no-raw-fp8", action="store_true", help="leave out the lax_fp8_raw baseline")
    g.add_argument("--shapes", default=None, help="MxKxN triples, comma-separated (default: 8192^3 and M=16384 ones)")
    g.add_argument("--modes", type=_names, default=None, help="fwd,fwd_bwd (default: both)")
    g.add_argument("--budget-s", type=float, default=None, help="skip cases that would start after this many seconds")

    t = sub.add_parser("train", parents=[common], help="train-step tokens/s and MFU per model and recipe")
    t.add_argument("--models", type=_names, default=None, help="model presets (default: 350m)")
    t.add_argument("--recipes", type=_names, default=None, help="recipes (default: bf16 and six low-precision ones)")
    t.add_argument("--peers", type=_names, default=[],
                   help="peer FP8 libraries, one row each after the recipes: flax_fp8,qwix_fp8 (default: none)")
    t.add_argument("--batch", type=int, default=16, help="sequences per step")
    t.add_argument("--seq-len", type=int, default=1024)
    t.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    t.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra config override key=value for every case, e.g. model.n_layers=2")
    t.add_argument("--budget-s", type=float, default=None, help="skip cases that would start after this many seconds")

    h = sub.add_parser("hadamard", parents=[common], help="matmul vs butterfly Hadamard GB/s vs a device copy")
    h.add_argument("--axes", type=int, nargs="+", default=[-1, 0], help="-1: d (forward K), 0: tokens (wgrad K)")
    h.add_argument("--signs", choices=("none", "per_call"), default="none")

    c = sub.add_parser("comm", parents=[common],
                       help="all-reduce GB/s across the devices, alone and beside a GEMM (how much of it is hidden)")
    c.add_argument("--sizes-mib", type=_sizes, default=None, help="per-device bf16 buffer sizes in MiB (default: 8,40,128,512)")
    c.add_argument("--gemm-n", type=int, default=None, help="per-device bf16 GEMM size n (n^3; default: 8192)")

    r = sub.add_parser("report", help="print the tables of the JSON files in a --out directory")
    r.add_argument("dir", help="directory holding <bench>.json files")


def _run(args) -> tuple[list[dict], tuple, dict]:
    """Run the chosen benchmark; returns (rows, table columns, JSON meta)."""
    import jax

    from lowprec.bench.report import Recorder
    from lowprec.bench.timing import check_reps, device_info

    check_reps(args.reps, 1)
    key = jax.random.key(args.seed)
    meta = {**device_info(), "bench": args.bench, "argv": sys.argv[1:],
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    record = Recorder(Path(args.out) / f"{args.bench}.json" if args.out else None, meta)

    def show(row: dict) -> None:
        record(row)
        print("  " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    deadline = None if getattr(args, "budget_s", None) is None else time.monotonic() + args.budget_s
    print(f"lowprec bench {args.bench} on {meta['device_kind']} (jax {meta['jax']}), median of {args.reps}", flush=True)
    if args.bench == "quantize":
        from lowprec.bench import quantize as bench
        from lowprec.numerics import specs

        sizes = args.sizes_mib or bench.DEFAULT_SIZES_MIB
        shapes = bench.SMALL_SHAPES if args.small else [bench.shape_for(s) for s in sizes]
        bench.run_quantize(show, shapes=shapes, spec_names=args.specs or specs.names(), reps=args.reps, key=key)
    elif args.bench == "gemm":
        from lowprec import recipes
        from lowprec.bench import gemm as bench
        from lowprec.bench.peers import PEERS

        shapes = bench.parse_shapes(args.shapes) if args.shapes else (bench.SMALL_SHAPES if args.small else bench.DEFAULT_SHAPES)
        methods = ([] if args.no_raw_fp8 else ["lax_fp8_raw"])
        methods += recipes.names() if args.recipes is None else args.recipes
        peers = list(PEERS) if args.peers is None else args.peers
        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            raise ValueError(f"--peers: unknown {unknown}; choose from {', '.join(PEERS)}")
        bench.run_gemm(show, shapes=shapes, methods=methods + peers, modes=args.modes or bench.MODES,
                       reps=args.reps, key=key, deadline=deadline)
    elif args.bench == "train":
        from lowprec.bench import train as bench

        models = args.models or (bench.SMALL["models"] if args.small else bench.DEFAULT_MODELS)
        batch, seq_len = (bench.SMALL["batch"], bench.SMALL["seq_len"]) if args.small else (args.batch, args.seq_len)
        overrides = (list(bench.SMALL["overrides"]) if args.small else []) + args.overrides
        with tempfile.TemporaryDirectory(prefix="lowprec_bench_") as workdir:
            bench.run_train(show, models=models, recipe_names=args.recipes or bench.DEFAULT_RECIPES, batch=batch,
                            seq_len=seq_len, steps=args.reps, warmup=args.warmup, workdir=workdir,
                            overrides=overrides, deadline=deadline, peers=args.peers)
    elif args.bench == "comm":
        from lowprec.bench import comm as bench

        small = bench.SMALL if args.small else {}
        sizes = args.sizes_mib or small.get("sizes_mib", bench.DEFAULT_SIZES_MIB)
        bench.run_comm(show, sizes_mib=sizes, gemm_n=args.gemm_n or small.get("gemm_n", bench.DEFAULT_GEMM_N),
                       reps=args.reps, key=key)
    else:
        from lowprec.bench import hadamard as bench

        bench.run_hadamard(show, shape=bench.SMALL_SHAPE if args.small else bench.DEFAULT_SHAPE, axes=args.axes,
                           signs=args.signs, reps=args.reps, key=key)
    return record.rows, bench.COLUMNS, meta


def columns_of(name: str) -> tuple:
    import importlib

    return importlib.import_module(f"lowprec.bench.{name}").COLUMNS


def print_table(name: str, rows: list[dict], meta: dict, columns: tuple) -> None:
    from lowprec.bench.report import table

    print(f"\n== {name} | {meta.get('device_kind')} | jax {meta.get('jax')} | {len(rows)} rows")
    print(table(rows, columns))


def main(args) -> int:
    if args.bench == "report":
        found = 0
        for name in BENCHES:
            path = Path(args.dir) / f"{name}.json"
            if path.exists():
                data = json.loads(path.read_text())
                print_table(name, data["rows"], data["meta"], columns_of(name))
                found += 1
        if not found:
            print(f"no <bench>.json files in {args.dir}", file=sys.stderr)
        return 0 if found else 1
    try:
        rows, columns, meta = _run(args)
    except ValueError as e:  # bad arguments, raised before any case runs
        print(f"lowprec bench {args.bench}: error: {e}", file=sys.stderr)
        return 2
    print_table(args.bench, rows, meta, columns)
    return 0 if rows and not all("error" in r for r in rows) else 1
