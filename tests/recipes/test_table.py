"""Golden string of every recipe, GEMM by GEMM (AQT style): a changed default shows up in review.

To accept an intended change, regenerate tests/recipes/golden_recipes.txt with recipes_table()."""
from pathlib import Path

import lowprec
from lowprec.recipes import cli
from lowprec.recipes.table import recipes_table

GOLDEN = Path(__file__).with_name("golden_recipes.txt")


def test_recipes_table_matches_golden():
    table = recipes_table([lowprec.recipes.get(n) for n in lowprec.recipes.names()])
    assert table + "\n" == GOLDEN.read_text()


def test_cli_prints_selected(capsys):
    parser = __import__("argparse").ArgumentParser()
    cli.configure_parser(parser)
    assert cli.main(parser.parse_args(["nvfp4"])) == 0
    out = capsys.readouterr().out
    assert "RHT-16 fixed_te" in out and "quartet" not in out
