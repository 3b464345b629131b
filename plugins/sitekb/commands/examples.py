"""Examples at the foot of every command's ``--help``.

A command family may write its own epilog (``examples:`` and the lines under
it); every command that has none gets its lines from :data:`EXAMPLES` here, so
``sitekb COMMAND --help`` always ends with a few commands a person can copy.
:func:`attach` runs once, at the end of :func:`sitekb.cli.build_parser`; the
test suite parses every example line with the real parser, so an example
cannot outlive a renamed flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

EXAMPLES: dict[str, tuple[str, ...]] = {
    "run": (
        "sitekb run demo                          the demo site, end to end, on embedded defaults",
        "sitekb run acme --alias staging          publish to another alias",
        "sitekb run acme --dry-run                tokens and cost to embed, without calling the model",
        "sitekb run acme --from evaluate          judge the newest run again after relaxing a threshold",
        "sitekb run acme --engine airflow --json  through the site's Airflow DAG",
        "sitekb run --start-url https://example.com/docs/",
    ),
    "db": ("sitekb db status", "sitekb db start", "sitekb db url", "sitekb db migrate --json"),
    "demo": ("sitekb demo", "sitekb demo --port 9000"),
    "airflow": ("sitekb airflow standalone", "sitekb airflow dags list"),
    "quarantine approve": (
        'sitekb quarantine approve https://example.com/webinar --reason "transcript checked by hand"',
        'sitekb quarantine approve https://example.com/faq --site acme --by ana --reason "short on purpose" --json',
    ),
    "quarantine approvals": ("sitekb quarantine approvals", "sitekb quarantine approvals --site acme --json"),
    "snapshots list": ("sitekb snapshots list", "sitekb snapshots list --site acme --json"),
    "snapshots show": ("sitekb snapshots show 12",),
    "snapshots history": ("sitekb snapshots history --site acme", "sitekb snapshots history --alias staging --json"),
    "snapshots pin": ('sitekb snapshots pin 12 --reason "before the rebrand"',),
    "snapshots unpin": ("sitekb snapshots unpin 12",),
    "snapshots prune": ("sitekb snapshots prune --site acme", "sitekb snapshots prune --site acme --keep 3 --json"),
    "snapshots compact": ("sitekb snapshots compact --site acme", "sitekb snapshots compact --site acme --snapshot 42 "
                          "--force --json"),
    "publish": ("sitekb publish 12", 'sitekb publish 12 --alias staging --reason "new pricing copy" --json'),
    "rollback": ("sitekb rollback --site acme", 'sitekb rollback --site acme --reason "wrong prices" --json'),
    "search": (
        'sitekb search "how do I reset my password" --site acme',
        'sitekb search "ERR_4012" --mode keyword --k 3',
        'sitekb search "pricing" --pages 2 --url-prefix https://acme.example/docs/ --json',
        'sitekb search "¿cuánto cuesta?" --query-language es --snapshot 12',
    ),
    "serve": ("sitekb serve", "sitekb serve --port 8080 --api-key-file /etc/sitekb/keys"),
    "crawl-stats": ("sitekb crawl-stats --site acme", "sitekb crawl-stats --limit 5 --json"),
    "embeddings spend": ("sitekb embeddings spend --site acme", "sitekb embeddings spend --limit 5 --json"),
    "embeddings cache": ("sitekb embeddings cache", "sitekb embeddings cache --json"),
    "embeddings": ("sitekb embeddings spend --site acme", "sitekb embeddings cache"),
    "audit": ("sitekb audit --site acme", "sitekb audit --action published --limit 20 --json"),
    "completion": ("sitekb completion bash > ~/.local/share/bash-completion/completions/sitekb",
                   'eval "$(sitekb completion zsh)"'),
    "quarantine export": ("sitekb quarantine export --site acme --dir fixes/", "sitekb quarantine export --json"),
    "corrections add": ('sitekb corrections add https://acme.example/webinar --file fixes/webinar.md '
                        '--reason "cleaned transcript"',),
    "corrections list": ("sitekb corrections list --site acme", "sitekb corrections list --all --json"),
    "corrections remove": ('sitekb corrections remove https://acme.example/webinar --reason "the video team fixed it"',),
    "embeddings prune": ("sitekb embeddings prune --dry-run", "sitekb embeddings prune --older-than 60 --json"),
}


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps descriptions as argparse does, and leaves an ``examples:`` epilog's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command of the CLI, as (its words, its parser): a parent with its own action counts too."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path and (not groups or parser.get_default("func") is not None):
        yield path, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from commands(sub, (*path, name))


def example_lines(epilog: str | None) -> list[str]:
    """The commands of an ``examples:`` epilog, without their explanations."""
    if not epilog or not epilog.startswith("examples:"):
        return []
    lines = [line.strip() for line in epilog.splitlines()[1:] if line.strip()]
    return [line.split("  ")[0].strip() for line in lines]


def attach(parser: argparse.ArgumentParser) -> None:
    """Give every command without an ``examples:`` epilog its lines from :data:`EXAMPLES`."""
    for path, sub in commands(parser):
        if not (sub.epilog or "").startswith("examples:") and " ".join(path) in EXAMPLES:
            sub.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[" ".join(path)])
        if sub.formatter_class is argparse.HelpFormatter:
            sub.formatter_class = ExamplesFormatter
