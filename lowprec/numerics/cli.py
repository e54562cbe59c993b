"""`lowprec specs`: the number formats and the named quantization specs."""
from __future__ import annotations

import argparse

from lowprec.numerics import specs
from lowprec.numerics.formats import FORMATS, FloatFormat
from lowprec.recipes.table import format_table


def configure_parser(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def format_rows() -> list[tuple[str, ...]]:
    rows = []
    for name, fmt in FORMATS.items():
        if isinstance(fmt, FloatFormat):
            rows.append((name, str(fmt.bits), f"E{fmt.exp_bits}M{fmt.man_bits} {fmt.specials}", f"{fmt.max_value:g}",
                         f"{fmt.min_subnormal:g}", str(fmt.storage_dtype.dtype if hasattr(fmt.storage_dtype, 'dtype') else fmt.storage_dtype)))
        else:
            rows.append((name, str(fmt.bits), "int" + (" centered" if fmt.centered else ""), f"{fmt.max_value:g}",
                         f"{2.0 ** -fmt.frac_bits:g}", str(fmt.storage_dtype.dtype)))
    return rows


def main(args: argparse.Namespace) -> int:
    del args
    print(format_table(format_rows(), ("format", "bits", "layout", "max", "min step", "storage")))
    print()
    spec_rows = [(n, specs.get(n).describe(), f"{specs.get(n).bits_per_element:g}") for n in specs.names()]
    print(format_table(spec_rows, ("spec", "element / block / scale / rule / rounding", "bits/elem")))
    return 0
