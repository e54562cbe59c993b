"""`lowprec recipes`: every training recipe, GEMM by GEMM."""
from __future__ import annotations

import argparse

from lowprec import recipes
from lowprec.recipes.table import recipes_table


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="recipes to show (default: all registered)")


def main(args: argparse.Namespace) -> int:
    chosen = [recipes.get(n) for n in (args.names or recipes.names())]
    print("fprop: Y = X·W   dgrad: dX = dY·Wᵀ   wgrad: dW = Xᵀ·dY   (element, scale block, scale format, rule, rounding)")
    print(recipes_table(chosen))
    return 0
