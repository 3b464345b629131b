"""The store: every SQL statement sitekb runs against its own tables, one module per table group.

- :mod:`~sitekb.store.connection` connections and the database URL;
  :mod:`~sitekb.store.schema` migrations, repeatable scripts and privileges;
  :mod:`~sitekb.store.embedded` the embedded server.
- :mod:`~sitekb.store.runs` runs and their stage records;
  :mod:`~sitekb.store.pages` fetched pages; :mod:`~sitekb.store.ledger` the
  exclusion ledger and crawl statistics; :mod:`~sitekb.store.documents`
  extracted documents and their verdicts; :mod:`~sitekb.store.approvals`
  content owners' approvals; :mod:`~sitekb.store.chunks` staged chunks;
  :mod:`~sitekb.store.fulltext` and :mod:`~sitekb.store.embeddings` the
  content-addressed caches and the embedding spend;
  :mod:`~sitekb.store.snapshots` snapshot records, aliases and retention;
  :mod:`~sitekb.store.snapshot_tables` the snapshot tables themselves;
  :mod:`~sitekb.store.knowledge` the Airflow Knowledge view's reads;
  :mod:`~sitekb.store.locks` the locks writers take (rows of ``sitekb.locks``), with a bounded wait;
  :mod:`~sitekb.store.history` the bound on run history (old runs and their ledgers).

Stages, CLI commands and the crawler call these functions; none of them
writes SQL of its own. Reads that frontends make go through the SQL API
(``sitekb_api``, :mod:`sitekb.query`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg

from sitekb.settings import Settings
from sitekb.store.connection import connect, connection, database_url, redact, server_version
from sitekb.store.schema import migrate

__all__ = ["connect", "connection", "database_url", "migrate", "open_database", "redact", "server_version"]


@contextmanager
def open_database(settings: Settings) -> Iterator[psycopg.Connection]:
    """Resolve the URL, connect and migrate: what every command does first."""
    with connection(database_url(settings)) as conn:
        migrate(conn)
        yield conn
