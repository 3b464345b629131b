"""The database schema: numbered migrations, repeatable scripts, privileges.

Three kinds of SQL live under ``sql/``, applied in this order by :func:`migrate`:

- ``migrations/NNNN_name.sql`` change tables, types and data. Each runs
  exactly once, in order, and is recorded in ``public.sitekb_schema_migrations``.
  A released migration is never edited; a change is a new number.
- ``repeatable/<schema>.<object>.sql`` hold the code: one function or view per
  file, written to be re-run (``CREATE OR REPLACE FUNCTION`` / ``VIEW``). When
  any file's checksum differs from the one recorded in
  ``public.sitekb_schema_repeatables``, every repeatable file is applied again
  in name order (a file that needs another sorts after it), so a diff of a
  function is a diff of one file and an upgraded database ends up defining
  exactly what a fresh one does.
- ``privileges.sql`` is applied last whenever anything else was (an object
  dropped and created again has lost its grants), and also whenever the reader
  role lacks a grant it should hold: the role was created after the last
  migrate, or somebody revoked a grant.

A database already migrated by a newer sitekb (a rolling deploy, where old
workers still start) is left alone: its functions are newer than the ones this
version ships, and applying ours would take them back.

Then, on every migrate, ``sitekb.ensure_search_views()`` gives any snapshot
that lacks one the view ``sitekb_api.search`` reads and its BM25 postings (a
snapshot built by an older sitekb); normally there is none to repair.

The token ``@extschema:vector@`` (PostgreSQL's own notation in extension
scripts) stands for the schema the vector extension lives in, quoted. The API's
SECURITY DEFINER functions pin ``search_path`` to ``pg_catalog, pg_temp`` and name
the extension's operator and functions with this schema, so that nobody who may
create objects in that schema (often ``public``) can shadow a built-in function.

Everything runs in one transaction under the schema lock (:func:`sitekb.store.locks.hold_schema`),
so two workers starting together neither race nor see half a schema.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from sitekb.store import locks

log = logging.getLogger(__name__)

MIGRATION_WAIT = "5min"
LOCK = 0x5173_6B62  # "sitekb": the advisory key of a first install, before sitekb.locks exists
VECTOR_SCHEMA_TOKEN = "@extschema:vector@"
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REPEATABLE = re.compile(r"^([a-z0-9_]+\.[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Script:
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _folder(name: str):
    return resources.files("sitekb.store").joinpath("sql", name)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with sitekb, in order."""
    found = []
    for entry in _folder("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def repeatables() -> list[Script]:
    """The repeatable scripts (one function or view each), in the order they are applied."""
    found = [Script(_REPEATABLE.match(e.name).group(1), e.read_text(encoding="utf-8"))
             for e in _folder("repeatable").iterdir() if _REPEATABLE.match(e.name)]
    return sorted(found, key=lambda s: s.name)


def privileges() -> Script:
    return Script("privileges", resources.files("sitekb.store").joinpath("sql", "privileges.sql")
                  .read_text(encoding="utf-8"))


def latest_version() -> int:
    """The newest migration this version of sitekb ships (what /readyz expects)."""
    return max(version for version, _, _ in migrations())


def migrate(conn: psycopg.Connection) -> list[int]:
    """Bring the schema up to date; return the migration versions applied now. Idempotent."""
    with conn.transaction():
        # Another process may be migrating right now: wait for it, but not forever.
        locks.hold_schema(conn, "migrating the sitekb schema", wait=MIGRATION_WAIT, advisory_key=LOCK)
        conn.execute(
            """CREATE TABLE IF NOT EXISTS public.sitekb_schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS public.sitekb_schema_repeatables (
                   name text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM public.sitekb_schema_migrations")}
        if done and max(done) > latest_version():
            log.warning("schema: the database is at migration %d, newer than this sitekb (%d); "
                        "leaving its functions and grants as they are", max(done), latest_version())
            register_vector(conn)
            return []
        applied = []
        for version, name, script in migrations():
            if version in done:
                continue
            conn.execute(script)
            conn.execute("INSERT INTO public.sitekb_schema_migrations (version, name) VALUES (%s, %s)",
                         (version, name))
            applied.append(version)
        scripts = [*repeatables(), privileges()]
        recorded = dict(conn.execute("SELECT name, checksum FROM public.sitekb_schema_repeatables").fetchall())
        changed = [s.name for s in scripts if recorded.get(s.name) != s.checksum]
        vector_schema = _vector_schema(conn)
        if applied or changed:
            for script in scripts:
                conn.execute(script.text.replace(VECTOR_SCHEMA_TOKEN, vector_schema))
            conn.execute("DELETE FROM public.sitekb_schema_repeatables")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO public.sitekb_schema_repeatables (name, checksum) VALUES (%s, %s)",
                                [(s.name, s.checksum) for s in scripts])
            log.info("schema: applied migrations %s and %d repeatable scripts (changed: %s)",
                     applied or "none", len(scripts), ", ".join(changed) or "none")
        elif not reader_grants_complete(conn):
            conn.execute(privileges().text.replace(VECTOR_SCHEMA_TOKEN, vector_schema))
            if reader_grants_complete(conn):
                log.warning("schema: restored the grants of role %s", READER_ROLE)
        repaired = [row[0] for row in conn.execute("SELECT sitekb.ensure_search_views()")]
        if repaired:
            log.warning("schema: gave snapshots %s the search view or BM25 postings they lacked", repaired)
    register_vector(conn)
    return applied


READER_ROLE = "sitekb_reader"


def reader_grants_complete(conn: psycopg.Connection) -> bool:
    """Whether the reader role exists and holds every grant privileges.sql gives it."""
    row = conn.execute(
        """SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s) THEN false ELSE
                  has_schema_privilege(%(role)s, 'sitekb_api', 'USAGE')
                  AND has_schema_privilege(%(role)s, e.extnamespace, 'USAGE')
                  AND has_table_privilege(%(role)s, 'sitekb_api.snapshots', 'SELECT')
                  AND has_table_privilege(%(role)s, 'sitekb_api.aliases', 'SELECT')
                  AND NOT EXISTS (SELECT 1 FROM pg_proc p
                                  WHERE p.pronamespace = 'sitekb_api'::regnamespace
                                    AND NOT has_function_privilege(%(role)s, p.oid, 'EXECUTE'))
                  END
           FROM pg_extension e WHERE e.extname = 'vector'""", {"role": READER_ROLE}).fetchone()
    return bool(row and row[0])


def _vector_schema(conn: psycopg.Connection) -> str:
    row = conn.execute("""SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'vector'""").fetchone()
    return sql.Identifier(row[0]).as_string(conn)
