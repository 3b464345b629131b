"""`sitekb completion`: the script completes what the parser accepts, run in a real bash."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sitekb.cli import build_parser, main
from sitekb.commands.completion import script, tree

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


def _complete(words: list[str]) -> list[str]:
    """What Tab offers after ``words`` (the last one being typed), as bash computes it."""
    array = " ".join(f"'{w}'" for w in words)
    program = (f"{script(build_parser(), 'bash')}\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
               "_sitekb_complete; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


@pytest.mark.parametrize("words, offered, not_offered", [
    (["sitekb", ""], {"run", "search", "snapshots", "completion", "--log-level"}, {"--mode"}),
    (["sitekb", "se"], {"search", "serve"}, {"run"}),
    (["sitekb", "search", "--"], {"--mode", "--per-page", "--pages", "--json", "--site"}, {"--engine"}),
    (["sitekb", "search", "--mode", ""], {"vector", "keyword", "hybrid"}, {"--json"}),
    (["sitekb", "run", "--from", ""], {"crawl", "embed", "publish"}, set()),
    (["sitekb", "db", ""], {"start", "stop", "status", "url", "migrate", "--json"}, set()),
    (["sitekb", "snapshots", ""], {"list", "diff"}, set()),
    (["sitekb", "--log-level", "d"], {"debug"}, {"info"}),
])
def test_tab_offers_what_the_parser_accepts(words, offered, not_offered):
    got = set(_complete(words))
    assert offered <= got, (words, got)
    assert not (not_offered & got), (words, got)


def test_every_subcommand_of_the_parser_is_in_the_script():
    commands = tree(build_parser())
    assert ("snapshots", "diff") in commands and ("completion",) in commands
    text = script(build_parser(), "bash")
    for path in commands:
        if path:
            assert " ".join(path) in text


def test_the_command_prints_bash_and_zsh_scripts(capsys):
    assert main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    assert "complete -o default -F _sitekb_complete sitekb" in bash
    subprocess.run(["bash", "-n"], input=bash, text=True, check=True)      # it parses
    assert main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith("#compdef sitekb") and "bashcompinit" in zsh
