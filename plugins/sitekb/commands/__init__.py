"""Subcommand families of the `sitekb` CLI, one module each (see cli.EXTRA_COMMANDS).

Helpers every family shares live here.
"""

from __future__ import annotations

import json


def print_json(data) -> None:
    """Machine-readable output of a command (`--json`)."""
    print(json.dumps(data, indent=2, default=str))


def connect(settings):
    """An open, migrated database connection for a command."""
    from sitekb import db

    return db.open_database(settings)
