"""Docs are tested: every CLI command has help text and a README mention, and the
README's quickstart is exactly the two commands."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from sitekb.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", helps.get(name), sub
                yield from _subcommands(sub, f"{prefix}{name} ")


def test_every_command_has_help_and_a_readme_mention():
    commands = list(_subcommands(build_parser()))
    assert len(commands) >= 10
    for name, help_text, _ in commands:
        assert help_text, f"`sitekb {name}` has no help text"
        top = name.split()[0]
        assert f"sitekb {top}" in README, f"`sitekb {top}` is not mentioned in README.md"


def test_every_option_has_help():
    for name, _, sub in _subcommands(build_parser()):
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"`sitekb {name} {action.option_strings[0]}` has no help text"


def test_quickstart_is_the_two_commands():
    quickstart = README.split("## Quickstart", 1)[1]
    first_block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    assert first_block.split() == ["make", "run", "make", "test"]


def test_make_targets_exist():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    for target in ("run", "test", "bench", "serve", "airflow"):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target} is missing"
