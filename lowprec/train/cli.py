"""`lowprec train CONFIG.yaml [more.yaml ...] [section.key=value ...]`.

Exit status: 0 when the run finished (or stopped at train.stop_at_step), 2 for a bad config,
3 when the run went NaN or diverged (summary.json records the step).
"""
from __future__ import annotations

import argparse
import sys

EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", metavar="CONFIG.yaml | key=value",
                        help="YAML config files (applied in order), then dotted overrides such as optim.lr=6e-4")


def main(args: argparse.Namespace) -> int:
    from lowprec.train.config import load_config
    from lowprec.train.loop import train

    paths = [item for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    try:
        cfg = load_config(paths, overrides)
        summary = train(cfg)
    except ValueError as e:
        print(f"lowprec train: error: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    print(f"status {summary['status']} | steps {summary['steps_done']}/{summary['steps']} | "
          f"val_loss {summary['final_val_loss']} | val_bpb {summary['final_val_bpb']} | summary in "
          f"{cfg.train.run_dir}/summary.json")
    return EXIT_DIVERGED if summary["status"] in ("nan", "diverged") else 0
