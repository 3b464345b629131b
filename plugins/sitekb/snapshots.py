"""Snapshots: build, judge, publish, roll back, retire.

A snapshot is one table ``sitekb_snapshots.snap_<id>`` holding the chunks of
one run with their vectors (fixed dimension, so an HNSW index fits) and a
full-text column. It is immutable once built. Aliases (``production``,
``staging``, ...) are rows in ``sitekb.aliases``; moving one is a single
UPDATE in one transaction, so publish and rollback take the same time
whatever the snapshot size, and a reader sees either the old snapshot or the
new one, never a mix. Every move is written to ``sitekb.alias_events``.

Lifecycle: building → validated → published / rejected → retired.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from sitekb.db import snapshot_table
from sitekb.errors import NotFound, SitekbError

DEFAULT_ALIAS = "production"


@dataclass
class Snapshot:
    snapshot_id: int
    site: str
    run_id: str
    state: str
    table_name: str | None
    embedding_provider: str
    embedding_model: str
    dimensions: int
    tokenizer: str
    config_hash: str
    extractor_version: str
    chunker_version: str
    counts: dict
    quality: dict
    diff: dict
    reasons: list
    pinned: bool
    created_at: datetime
    built_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["created_at"] = self.created_at.isoformat()
        out["built_at"] = self.built_at.isoformat() if self.built_at else None
        return out


def get(conn: psycopg.Connection, snapshot_id: int) -> Snapshot:
    with conn.cursor(row_factory=class_row(Snapshot)) as cur:
        snap = cur.execute("SELECT * FROM sitekb.snapshots WHERE snapshot_id = %s", (snapshot_id,)).fetchone()
    if snap is None:
        raise NotFound(f"snapshot {snapshot_id} does not exist; `sitekb snapshots list` shows the known ones")
    return snap


def for_run(conn: psycopg.Connection, run_id: str) -> Snapshot | None:
    with conn.cursor(row_factory=class_row(Snapshot)) as cur:
        return cur.execute("SELECT * FROM sitekb.snapshots WHERE run_id = %s", (run_id,)).fetchone()


def list_snapshots(conn: psycopg.Connection, site: str | None = None, limit: int = 50) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT s.snapshot_id, s.site, s.state, s.run_id, s.embedding_model, s.dimensions, s.counts,
                      s.created_at, s.pinned,
                      coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases
               FROM sitekb.snapshots s LEFT JOIN sitekb.aliases a USING (snapshot_id)
               WHERE %(site)s::text IS NULL OR s.site = %(site)s
               GROUP BY s.snapshot_id ORDER BY s.snapshot_id DESC LIMIT %(limit)s""",
            {"site": site, "limit": limit},
        ).fetchall()


def resolve(conn: psycopg.Connection, site: str, alias: str | None = DEFAULT_ALIAS,
            snapshot_id: int | None = None) -> Snapshot:
    """The snapshot a query should read: a pinned id, or what the alias points to."""
    if snapshot_id is not None:
        snap = get(conn, snapshot_id)
        if snap.state in ("building", "rejected") or snap.table_name is None:
            raise NotFound(f"snapshot {snapshot_id} is {snap.state}; only built, non-rejected snapshots can be queried")
        return snap
    row = conn.execute(
        "SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s", (site, alias)
    ).fetchone()
    if row is None:
        raise NotFound(
            f"site {site!r} has no snapshot published as {alias!r} yet. "
            f"Run `sitekb run {site}` to build and publish one."
        )
    return get(conn, row[0])


# -- building -------------------------------------------------------------

def create_record(conn: psycopg.Connection, *, site: str, run_id: str, provider: str, model: str,
                  dimensions: int, tokenizer: str, config_hash: str, extractor_version: str,
                  chunker_version: str) -> int:
    """The snapshot row of a run (created once; a retried task gets the same id)."""
    row = conn.execute(
        """INSERT INTO sitekb.snapshots (site, run_id, embedding_provider, embedding_model, dimensions,
                                         tokenizer, config_hash, extractor_version, chunker_version)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (run_id) DO UPDATE SET state = 'building'
           RETURNING snapshot_id""",
        (site, run_id, provider, model, dimensions, tokenizer, config_hash, extractor_version, chunker_version),
    ).fetchone()
    return row[0]


def build(conn: psycopg.Connection, snapshot_id: int, run_id: str, model: str, dimensions: int) -> dict:
    """Load the run's chunks and cached vectors into a fresh table, then index it.

    Build-then-swap: a retry drops the half-built table of this snapshot and
    starts over; no published table is ever touched.
    """
    table_name = f"snap_{snapshot_id}"
    table = snapshot_table(table_name)
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL(
                """CREATE TABLE {table} (
                       chunk_id      text PRIMARY KEY,
                       url           text NOT NULL,
                       title         text,
                       heading_path  text[] NOT NULL,
                       seq           integer NOT NULL,
                       content       text NOT NULL,
                       token_count   integer NOT NULL,
                       language      text,
                       tags          text[] NOT NULL DEFAULT '{{}}',
                       published     text,
                       embedding     vector({dims}) NOT NULL,
                       tsv           tsvector NOT NULL
                   )"""
            ).format(table=table, dims=sql.Literal(dimensions))
        )
        # Load first, index after: building HNSW over a full table is much faster
        # than maintaining it row by row.
        loaded = conn.execute(
            sql.SQL(
                """INSERT INTO {table} (chunk_id, url, title, heading_path, seq, content, token_count,
                                        language, tags, published, embedding, tsv)
                   SELECT c.chunk_id, c.url, d.title, c.heading_path, c.seq, c.text, c.token_count,
                          d.language, d.tags, d.published, e.embedding::vector({dims}),
                          setweight(to_tsvector('english', coalesce(d.title, '')), 'A') ||
                          setweight(to_tsvector('english', array_to_string(c.heading_path, ' ')), 'B') ||
                          setweight(to_tsvector('english', c.text), 'C')
                   FROM sitekb.chunks c
                   JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
                   JOIN sitekb.embedding_cache e
                     ON e.model = %s AND e.dimensions = %s AND e.text_hash = c.text_hash
                   WHERE c.run_id = %s AND d.status = 'accepted'"""
            ).format(table=table, dims=sql.Literal(dimensions)),
            (model, dimensions, run_id),
        ).rowcount
        expected = conn.execute(
            """SELECT count(*) FROM sitekb.chunks c JOIN sitekb.documents d
                 ON d.run_id = c.run_id AND d.url = c.url
               WHERE c.run_id = %s AND d.status = 'accepted'""",
            (run_id,),
        ).fetchone()[0]
        if loaded != expected:
            raise SitekbError(
                f"snapshot {snapshot_id}: {expected - loaded} chunks have no cached embedding; "
                "re-run the embed task before building"
            )
        conn.execute(
            sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(table)
        )
        conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (tsv)").format(table))
        conn.execute(sql.SQL("CREATE INDEX ON {} (url)").format(table))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        pages = conn.execute(sql.SQL("SELECT count(DISTINCT url) FROM {}").format(table)).fetchone()[0]
        counts = {"chunks": loaded, "documents": pages}
        conn.execute(
            """UPDATE sitekb.snapshots SET table_name = %s, built_at = now(),
                      counts = counts || %s::jsonb
               WHERE snapshot_id = %s""",
            (table_name, json.dumps(counts), snapshot_id),
        )
    return counts


def set_state(conn: psycopg.Connection, snapshot_id: int, state: str, *, reasons: list | None = None,
              quality: dict | None = None, diff: dict | None = None, counts: dict | None = None) -> None:
    with conn.transaction():
        conn.execute(
            """UPDATE sitekb.snapshots SET state = %s,
                      reasons = coalesce(%s::jsonb, reasons),
                      quality = coalesce(%s::jsonb, quality),
                      diff = coalesce(%s::jsonb, diff),
                      counts = counts || coalesce(%s::jsonb, '{}'::jsonb)
               WHERE snapshot_id = %s""",
            (state, _json(reasons), _json(quality), _json(diff), _json(counts), snapshot_id),
        )


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, default=str)


# -- aliases --------------------------------------------------------------

def publish(conn: psycopg.Connection, snapshot_id: int, alias: str = DEFAULT_ALIAS, *,
            actor: str | None = None, reason: str = "") -> int | None:
    """Point ``alias`` at the snapshot in one transaction; return the previous target."""
    snap = get(conn, snapshot_id)
    if snap.state not in ("validated", "published", "retired") or snap.table_name is None:
        raise SitekbError(
            f"snapshot {snapshot_id} is {snap.state}; only validated or previously published snapshots "
            "can be published"
        )
    actor = actor or _actor()
    with conn.transaction():
        row = conn.execute(
            "SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s FOR UPDATE",
            (snap.site, alias),
        ).fetchone()
        previous = row[0] if row else None
        if previous == snapshot_id:
            return previous
        conn.execute(
            """INSERT INTO sitekb.aliases (site, alias, snapshot_id) VALUES (%s, %s, %s)
               ON CONFLICT (site, alias) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id, updated_at = now()""",
            (snap.site, alias, snapshot_id),
        )
        conn.execute("UPDATE sitekb.snapshots SET state = 'published' WHERE snapshot_id = %s", (snapshot_id,))
        if previous is not None:
            # The old target stays queryable by id until retention removes it.
            conn.execute(
                """UPDATE sitekb.snapshots SET state = 'retired'
                   WHERE snapshot_id = %s AND NOT EXISTS (
                       SELECT 1 FROM sitekb.aliases WHERE snapshot_id = %s)""",
                (previous, previous),
            )
        conn.execute(
            """INSERT INTO sitekb.alias_events (site, alias, from_snapshot, to_snapshot, actor, reason)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            (snap.site, alias, previous, snapshot_id, actor, reason),
        )
    return previous


def rollback(conn: psycopg.Connection, site: str, alias: str = DEFAULT_ALIAS, *,
             actor: str | None = None, reason: str = "rollback") -> tuple[int, int]:
    """Move ``alias`` back to the snapshot it pointed to before; return (from, to)."""
    current = resolve(conn, site, alias)
    row = conn.execute(
        """SELECT e.from_snapshot FROM sitekb.alias_events e
           JOIN sitekb.snapshots s ON s.snapshot_id = e.from_snapshot
           WHERE e.site = %s AND e.alias = %s AND e.to_snapshot = %s AND e.from_snapshot IS NOT NULL
             AND s.table_name IS NOT NULL AND s.state IN ('published', 'retired')
           ORDER BY e.id DESC LIMIT 1""",
        (site, alias, current.snapshot_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"alias {alias!r} of site {site!r} has no earlier snapshot to roll back to")
    publish(conn, row[0], alias, actor=actor, reason=reason)
    return current.snapshot_id, row[0]


def history(conn: psycopg.Connection, site: str | None = None, limit: int = 50) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, site, alias, from_snapshot, to_snapshot, actor, reason, moved_at
               FROM sitekb.alias_events WHERE %(site)s::text IS NULL OR site = %(site)s
               ORDER BY id DESC LIMIT %(limit)s""",
            {"site": site, "limit": limit},
        ).fetchall()


def apply_retention(conn: psycopg.Connection, site: str, keep: int) -> list[int]:
    """Drop snapshots beyond the newest ``keep`` that no alias points to and nobody pinned."""
    with conn.transaction():
        doomed = [
            row[0]
            for row in conn.execute(
                """SELECT snapshot_id FROM sitekb.snapshots s
                   WHERE site = %s AND NOT pinned AND state <> 'building'
                     AND NOT EXISTS (SELECT 1 FROM sitekb.aliases a WHERE a.snapshot_id = s.snapshot_id)
                     AND snapshot_id NOT IN (
                         SELECT snapshot_id FROM sitekb.snapshots WHERE site = %s
                         ORDER BY snapshot_id DESC LIMIT %s)
                     AND table_name IS NOT NULL""",
                (site, site, keep),
            )
        ]
        for snapshot_id in doomed:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(snapshot_table(f"snap_{snapshot_id}")))
            conn.execute(
                "UPDATE sitekb.snapshots SET state = 'retired', table_name = NULL WHERE snapshot_id = %s",
                (snapshot_id,),
            )
    return doomed


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
