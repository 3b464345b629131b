"""Database access at the edge: connections, the vector type, migrations.

Every connection registers pgvector's type once (``register_vector``) and runs
in autocommit mode: a statement outside ``with conn.transaction():`` commits on
its own, and a multi-statement change is always an explicit transaction block.
(With autocommit off, a stray SELECT opens an implicit transaction and a later
``transaction()`` block becomes a mere savepoint that never commits.)
The schema comes only from the versioned SQL files in ``migrations/``, applied
in order, each once, under an advisory lock so two workers starting together
do not race.

Settings read: ``SITEKB_DATABASE_URL`` via :func:`database_url`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from importlib import resources
from typing import Iterator

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from sitekb.errors import DatabaseUnavailable
from sitekb.settings import Settings

MIGRATION_LOCK = 0x5173_6B62  # "sitekb": any constant shared by all sitekb processes
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def database_url(settings: Settings | None = None, *, start_embedded: bool = True) -> str:
    """The URL to use: SITEKB_DATABASE_URL, else the embedded server (started on demand)."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    from sitekb import embedded_pg

    if start_embedded:
        return embedded_pg.start(settings.home)
    url = embedded_pg.url(settings.home)
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
            # The extension does not exist yet: migrate() creates it, then re-registers.
            pass
    return conn


@contextmanager
def connection(url: str) -> Iterator[psycopg.Connection]:
    conn = connect(url)
    try:
        yield conn
    finally:
        conn.close()


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with sitekb, in order."""
    found = []
    for entry in resources.files("sitekb.migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations; return the versions applied. Idempotent."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS public.sitekb_schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM public.sitekb_schema_migrations")}
        for version, name, script in migrations():
            if version in done:
                continue
            conn.execute(script)
            conn.execute(
                "INSERT INTO public.sitekb_schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied_now.append(version)
    register_vector(conn)
    return applied_now


def open_database(settings: Settings | None = None) -> psycopg.Connection:
    """Resolve the URL, connect and migrate: what every command does first."""
    conn = connect(database_url(settings))
    migrate(conn)
    return conn


def snapshot_table(table_name: str) -> sql.Composed:
    return sql.Identifier("sitekb_snapshots", table_name)


def snapshot_search_schema(snapshot_id: int) -> sql.Identifier:
    """The schema whose view ``chunks`` the SQL API's cached vector search reads (migration 0009)."""
    return sql.Identifier(f"sitekb_snap_{snapshot_id}")


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
