"""Subcommand families of the `sitekb` CLI, one module each (registered by cli.build_parser).

A command parses its arguments, calls the library with the settings the CLI
resolved once, and formats what comes back; it holds no SQL. The helpers
every family shares live here: the database connection, JSON output, tables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence


def print_json(data) -> None:
    """Machine-readable output of a command (`--json`)."""
    print(json.dumps(data, indent=2, default=str))


def connect(settings):
    """An open, migrated database connection for a command (a with-block closes it)."""
    from sitekb import store

    return store.open_database(settings)


def print_table(columns: Sequence[str], rows: Sequence[Sequence], *, right: Sequence[str] = ()) -> None:
    """Rows under a header, aligned by rich; never wrapped or cut when the output is a file or a pipe."""
    from rich.console import Console
    from rich.table import Table, box

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 10_000, soft_wrap=True, highlight=False).print(table)
