"""Connections at the edge: the database URL, the vector type, one clear error when it is down.

Every connection registers pgvector's type (``register_vector``) and runs in
autocommit mode: a statement outside ``with conn.transaction():`` commits on
its own, and a multi-statement change is always an explicit transaction block.
(With autocommit off, a stray SELECT opens an implicit transaction and a later
``transaction()`` block becomes a mere savepoint that never commits.)

Settings read (passed in): ``Settings.database_url``; unset, the embedded
server under ``Settings.home`` (:mod:`sitekb.store.embedded`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from pgvector.psycopg import register_vector

from sitekb.errors import DatabaseUnavailable
from sitekb.settings import Settings


def database_url(settings: Settings, *, start_embedded: bool = True) -> str:
    """The URL to use: the configured one, else the embedded server's (started on demand)."""
    if settings.database_url:
        return settings.database_url
    from sitekb.store import embedded

    if start_embedded:
        return embedded.start(settings.home)
    url = embedded.url(settings.home)
    if url is None:
        raise DatabaseUnavailable(
            "the embedded database is not running. Start it with `sitekb db start`, "
            "or set SITEKB_DATABASE_URL to an external Postgres with pgvector."
        )
    return url


def connect(url: str, *, autocommit: bool = True, register: bool = True) -> psycopg.Connection:
    """Open a connection with the vector type registered."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database at {redact(url)}: {str(exc).strip().splitlines()[0]}. "
            "Is it running? `sitekb db status` checks the embedded one; "
            "for an external server check SITEKB_DATABASE_URL."
        ) from exc
    if register:
        try:
            register_vector(conn)
        except psycopg.ProgrammingError:
            # The extension does not exist yet: migrate() creates it, then registers the type.
            pass
    return conn


def sibling(conn: psycopg.Connection, purpose: str) -> psycopg.Connection:
    """Another connection to ``conn``'s database and role, as :func:`connect` opens one (no vector type),
    named ``sitekb <purpose>`` in ``pg_stat_activity``."""
    from psycopg.conninfo import make_conninfo

    extra = {"password": conn.info.password} if conn.info.password else {}
    return connect(make_conninfo(conn.info.dsn, application_name=f"sitekb {purpose}", **extra), register=False)


@contextmanager
def connection(url: str) -> Iterator[psycopg.Connection]:
    """A connection for the length of a with-block."""
    conn = connect(url)
    try:
        yield conn
    finally:
        conn.close()


def delete_or_count(conn: psycopg.Connection, from_where: str, params: dict, *, dry_run: bool) -> int:
    """Delete the rows of ``FROM <from_where>`` in one transaction, or with ``dry_run`` only count them."""
    verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
    with conn.transaction():
        result = conn.execute(f"{verb} {from_where}", params)
        return result.fetchone()[0] if dry_run else result.rowcount


def server_version(conn: psycopg.Connection) -> str:
    """The server's PostgreSQL version, as it reports it."""
    return conn.execute("SHOW server_version").fetchone()[0]


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs (:func:`sitekb.redaction.redact`)."""
    from sitekb.redaction import redact as redact_text

    return redact_text(url)
