"""Every command's --help ends with examples, and every example parses with the real parser."""

from __future__ import annotations

import shlex

import pytest

from sitekb.cli import build_parser
from sitekb.commands.examples import commands, example_lines

PARSER = build_parser()
COMMANDS = list(commands(PARSER))


def test_the_walk_finds_the_commands_and_their_subcommands():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"run", "search", "snapshots diff", "quarantine", "quarantine approve", "embeddings prune"} <= names


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_ends_with_examples_that_parse(path, parser):
    text = parser.format_help()
    assert "\nexamples:\n" in text, f"`sitekb {' '.join(path)} --help` has no examples"
    lines = example_lines(parser.epilog)
    assert lines, f"`sitekb {' '.join(path)}` lists no example commands"
    for line in lines:
        if line.startswith("eval "):      # a shell line around one sitekb command
            line = line.split('"$(', 1)[1].rsplit(')"', 1)[0]
        words = shlex.split(line.split(" > ", 1)[0])
        assert words[0] == "sitekb", line
        args = PARSER.parse_args(words[1:])          # exits (a SystemExit fails the test) on a wrong flag
        assert args.command == path[0], line


def test_examples_keep_their_line_breaks_and_descriptions_are_still_wrapped():
    run = dict((" ".join(p), parser) for p, parser in COMMANDS)["run"]
    text = run.format_help()
    assert "\n  sitekb run demo " in text and "\n  sitekb run acme --dry-run " in text
    assert all(len(line) <= 120 for line in text.splitlines() if not line.startswith("  sitekb"))
