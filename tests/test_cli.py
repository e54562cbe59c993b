"""The `lowprec` dispatcher: help lists every command, unknown commands fail clearly."""
import pytest

from lowprec import cli


def test_help_lists_commands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["trian"])
    assert "unknown command 'trian'; choose from demo, recipes" in capsys.readouterr().err


def test_dispatches_to_a_subcommand(capsys):
    assert cli.main(["recipes", "mxfp4"]) == 0
    assert "e2m1 1x32 e8m0 floor rne" in capsys.readouterr().out
