"""A wrong command line has an exit code of its own (64, sysexits' EX_USAGE), apart from configuration errors (2)."""

from __future__ import annotations

import pytest

from sitekb.cli import USAGE_EXIT, main


@pytest.mark.parametrize("argv", [
    ["no-such-command"],
    ["run", "--no-such-flag"],
    ["snapshots", "pin", "not-a-number"],
    ["search"],                                 # the question is missing
    ["run", "demo", "--engine", "spaceship"],
])
def test_a_wrong_command_line_exits_64_and_says_what_is_wrong(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == USAGE_EXIT == 64
    err = capsys.readouterr().err
    assert "usage: sitekb" in err and "error:" in err


def test_a_configuration_error_keeps_exit_2(capsys):
    assert main(["run"]) == 2    # parsed fine, but names no site and no start URL
    assert "name a site" in capsys.readouterr().err
