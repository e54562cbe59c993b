"""`lowprec specs`: formats and named specs are listed with their limits."""
import argparse

from lowprec.numerics import cli


def test_specs_table(capsys):
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    assert cli.main(parser.parse_args([])) == 0
    out = capsys.readouterr().out
    assert "e4m3" in out and "448" in out and "float4_e2m1fn" in out
    assert "nvfp4" in out and "e2m1 1x16 ue4m3+fp32 absmax rne" in out
