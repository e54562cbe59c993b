"""`lowprec` command line: one subcommand per layer, each defined next to the code it drives.

Every subcommand module exposes `configure_parser(parser)` and `main(args) -> int`; modules are
imported only when their subcommand runs, so `lowprec fit` never pays for importing JAX.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lowprec.demo", "the main job: train tiny models per recipe, sweep, fit, plot"),
    "recipes": ("lowprec.recipes.cli", "print every training recipe, GEMM by GEMM"),
    "specs": ("lowprec.numerics.cli", "print the named quantization specs and formats"),
    "bench": ("lowprec.bench", "benchmarks: quantize, gemm, train, hadamard, comm"),
    "data": ("lowprec.data.cli", "build token shards from text (default: installed Python sources)"),
    "train": ("lowprec.train.cli", "train a model from a YAML config with key=value overrides"),
    "sweep": ("lowprec.sweeps.cli", "run a resumable sweep from a sweep YAML"),
    "runs": ("lowprec.fits.cli_runs", "print a runs table grouped by recipe"),
    "fit": ("lowprec.fits.cli_fit", "fit a scaling law to a runs table"),
    "predict": ("lowprec.fits.cli_predict", "compute-optimal N, D and precision from a fit"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowprec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"lowprec {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    return int(module.main(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
