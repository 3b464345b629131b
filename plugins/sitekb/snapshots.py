"""Snapshots: build, judge, publish, roll back, retire.

A snapshot is one table ``sitekb_snapshots.snap_<id>`` holding the chunks of
one run with their vectors (fixed dimension, so an HNSW index fits) and a
full-text column, plus a schema ``sitekb_snap_<id>`` with a view over it for
the SQL API's plan-cached search. It is immutable once built. Aliases (``production``,
``staging``, ...) are rows in ``sitekb.aliases``; moving one is a single
UPDATE in one transaction, so publish and rollback take the same time
whatever the snapshot size, and a reader sees either the old snapshot or the
new one, never a mix. Every move is written to ``sitekb.alias_events``.

Lifecycle: building → validated → published / rejected → retired. A
published or retired snapshot is never rebuilt; a pinned one and any that an
alias points to survive retention. Alias moves and retention of one site are
serialised by an advisory lock, so a publish never points at a table that
retention is dropping.

Frontends read snapshots through the SQL API (``sitekb_api``, migration
0005), which only shows published and earlier-published snapshots.
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from sitekb.db import snapshot_search_schema, snapshot_table
from sitekb.errors import ConfigError, NotFound, SitekbError

DEFAULT_ALIAS = "production"
STATES = ("building", "validated", "published", "rejected", "retired")
# Readers hold ACCESS SHARE locks; retention gives up on a busy table rather than
# queueing every later reader behind its DROP. It is dropped on the next run.
RETENTION_LOCK_TIMEOUT = "2s"


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
    embedding_base_url: str | None = None      # OpenAI-compatible server the vectors came from
    embedding_api_key_env: str | None = None   # the variable holding its key (a name, never a key)

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
                  chunker_version: str, base_url: str | None = None, api_key_env: str | None = None) -> int:
    """The snapshot row of a run (created once; a retried task gets the same id).

    A snapshot that was ever published is immutable: retrying the build of its
    run is refused instead of rebuilding a table that frontends may read.
    ``base_url`` is recorded without any user and password in it (frontends see
    it): an OPENAI_BASE_URL that carries them is set where queries run, and wins.
    """
    base_url = _without_credentials(base_url)
    row = conn.execute(
        """INSERT INTO sitekb.snapshots (site, run_id, embedding_provider, embedding_model, dimensions,
                                         tokenizer, config_hash, extractor_version, chunker_version,
                                         embedding_base_url, embedding_api_key_env)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (run_id) DO UPDATE SET state = 'building', embedding_base_url = EXCLUDED.embedding_base_url,
               embedding_api_key_env = EXCLUDED.embedding_api_key_env
               WHERE sitekb.snapshots.state IN ('building', 'validated', 'rejected')
           RETURNING snapshot_id""",
        (site, run_id, provider, model, dimensions, tokenizer, config_hash, extractor_version, chunker_version,
         base_url, api_key_env),
    ).fetchone()
    if row is None:
        existing = for_run(conn, run_id)
        raise SitekbError(
            f"snapshot {existing.snapshot_id} of run {run_id} is {existing.state} and immutable; "
            "start a new run to build a new snapshot"
        )
    return row[0]


def _without_credentials(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def build(conn: psycopg.Connection, snapshot_id: int, run_id: str, model: str, dimensions: int) -> dict:
    """Load the run's chunks with their cached embeddings and full-text vectors into a fresh table, then index it.

    Returns the counts (chunks, documents) and how long loading and indexing took.

    Build-then-swap: a retry drops the half-built table of this snapshot and
    starts over; no published table is ever touched.
    """
    table_name = f"snap_{snapshot_id}"
    table = snapshot_table(table_name)
    search_schema = snapshot_search_schema(snapshot_id)
    started = time.monotonic()
    with conn.transaction():
        _drop_snapshot_objects(conn, snapshot_id)
        # Every staged row of the run is read, so hash joins are right; the stages
        # have just written those rows, and without fresh statistics the planner
        # picks per-row nested loops (30x slower at 10k chunks).
        conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
        # CREATE TABLE AS lets parallel workers join and read while the leader writes;
        # INSERT ... SELECT never runs in parallel.
        conn.execute("SELECT set_config('parallel_setup_cost', '0', true), set_config('parallel_tuple_cost', '0', true)")
        # Room for the hash joins over the cached vectors (a parallel hash may use this times
        # hash_mem_multiplier per process): with the default 4 MB they spill to disk in batches.
        conn.execute("SELECT set_config('work_mem', '64MB', true)")
        # Load first, index after: building HNSW over a full table is much faster
        # than maintaining it row by row.
        # A row (vector + full-text vector + text) is usually over the 2 kB at which
        # Postgres moves values out of line: TOAST would write each row's vector and
        # full-text vector to a second table and index, which halves the load speed
        # and makes the HNSW build and keyword ranking read them back from there.
        # Rows stay whole up to a page (8 kB): with 384 or 768 dimensions they fit. A 1536-dimension
        # vector (6 kB, OpenAI's default) plus text and full-text vector does not, and Postgres
        # still moves the largest value (the vector) out of line, as it did before.
        loaded = conn.execute(
            sql.SQL(
                """CREATE TABLE {table} WITH (toast_tuple_target = 8160) AS
                   SELECT c.chunk_id, c.url, d.title, c.heading_path, c.seq, c.text AS content, c.token_count,
                          d.language, d.tags, d.published, e.embedding::vector({dims}) AS embedding,
                          -- The chunk stage cached the full-text vectors (sitekb.fulltext); one it
                          -- missed (a run chunked before migration 0007) is computed here.
                          coalesce(f.tsv, sitekb.fulltext_vector(d.title, c.heading_path, c.text)) AS tsv
                   FROM sitekb.chunks c
                   JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
                   JOIN sitekb.embedding_cache e
                     ON e.model = {model} AND e.dimensions = {dims} AND e.text_hash = c.text_hash
                   LEFT JOIN sitekb.fulltext_cache f ON f.key = sitekb.fulltext_key(d.title, c.heading_path, c.text)
                   WHERE c.run_id = {run_id} AND d.status = 'accepted'"""
            ).format(table=table, dims=sql.Literal(dimensions), model=sql.Literal(model), run_id=sql.Literal(run_id)),
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
        loaded_at = time.monotonic()
        # The HNSW graph is built in memory when it fits: give the build room for
        # the vectors plus their neighbour lists (bounded, and only for this transaction).
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true)",
                     (f"{_index_memory_mb(loaded, dimensions)}MB",))
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (chunk_id)").format(table))
        conn.execute(
            sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(table)
        )
        conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (tsv)").format(table))
        conn.execute(sql.SQL("CREATE INDEX ON {} (url)").format(table))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        # The SQL API's vector search reads "chunks" under this schema's search_path, so its
        # plan is cached per session (migration 0009). Only the owner may read it.
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(search_schema))
        conn.execute(sql.SQL("CREATE VIEW {}.chunks AS SELECT * FROM {}").format(search_schema, table))
        pages = conn.execute(sql.SQL("SELECT count(DISTINCT url) FROM {}").format(table)).fetchone()[0]
        counts = {"chunks": loaded, "documents": pages}
        conn.execute(
            """UPDATE sitekb.snapshots SET table_name = %s, built_at = now(),
                      counts = counts || %s::jsonb
               WHERE snapshot_id = %s""",
            (table_name, json.dumps(counts), snapshot_id),
        )
    finished = time.monotonic()
    return {**counts, "load_seconds": round(loaded_at - started, 3), "index_seconds": round(finished - loaded_at, 3)}


def _drop_snapshot_objects(conn: psycopg.Connection, snapshot_id: int) -> None:
    """Drop a snapshot's table (with its indexes) and the view schema the SQL API reads it through."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(snapshot_search_schema(snapshot_id)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(snapshot_table(f"snap_{snapshot_id}")))


def _index_memory_mb(rows: int, dimensions: int) -> int:
    need = rows * (dimensions * 4 + 300) * 1.3 / 2**20
    return int(min(2048, max(64, need)))


def set_state(conn: psycopg.Connection, snapshot_id: int, state: str, *, reasons: list | None = None,
              quality: dict | None = None, diff: dict | None = None, counts: dict | None = None) -> None:
    if state not in STATES:
        raise ValueError(f"unknown snapshot state {state!r}")
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


def _lock_site(conn: psycopg.Connection, site: str) -> None:
    """Serialise alias moves and retention of one site (released at the end of the transaction)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('sitekb.aliases'), hashtext(%s))", (site,))


# -- aliases --------------------------------------------------------------

def publish(conn: psycopg.Connection, snapshot_id: int, alias: str = DEFAULT_ALIAS, *,
            actor: str | None = None, reason: str = "") -> int | None:
    """Point ``alias`` at the snapshot in one transaction; return the previous target.

    One row changes, so this takes the same time whatever the snapshot size,
    and a reader resolving the alias sees the old target or the new one.
    """
    if not alias or len(alias) > 63:
        raise ConfigError("an alias is a name of 1 to 63 characters, e.g. production or staging")
    site = get(conn, snapshot_id).site
    actor = actor or _actor()
    with conn.transaction():
        _lock_site(conn, site)
        # Re-read under the lock: retention may have dropped the table meanwhile.
        snap = get(conn, snapshot_id)
        if snap.state not in ("validated", "published", "retired") or snap.table_name is None:
            why = "its table was dropped by retention" if snap.table_name is None and snap.state == "retired" \
                else f"it is {snap.state}"
            raise SitekbError(
                f"snapshot {snapshot_id} cannot be published: {why}. Only validated or previously "
                "published snapshots that still have their table can be published; "
                "`sitekb snapshots list` shows them"
            )
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
    """Move ``alias`` back to the snapshot it pointed to before; return (from, to).

    "Before" is the origin of the move that brought the alias to its current
    target, so a second rollback undoes the first.
    """
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
        raise NotFound(
            f"alias {alias!r} of site {site!r} has no earlier snapshot to roll back to "
            "(none, or its table was dropped by retention); `sitekb snapshots history` shows the moves"
        )
    publish(conn, row[0], alias, actor=actor, reason=reason)
    return current.snapshot_id, row[0]


def history(conn: psycopg.Connection, site: str | None = None, alias: str | None = None,
            limit: int = 50) -> list[dict]:
    """Alias moves, newest first: who moved which alias from which snapshot to which, when and why."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, site, alias, from_snapshot, to_snapshot, actor, reason, moved_at
               FROM sitekb.alias_events
               WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(alias)s::text IS NULL OR alias = %(alias)s)
               ORDER BY id DESC LIMIT %(limit)s""",
            {"site": site, "alias": alias, "limit": limit},
        ).fetchall()


# -- pins and retention ---------------------------------------------------

def set_pinned(conn: psycopg.Connection, snapshot_id: int, pinned: bool) -> Snapshot:
    """Pin (keep through retention) or unpin a snapshot; pinning a dropped one is refused."""
    snap = get(conn, snapshot_id)
    with conn.transaction():
        _lock_site(conn, snap.site)
        snap = get(conn, snapshot_id)
        if pinned and snap.table_name is None:
            raise SitekbError(
                f"snapshot {snapshot_id} has no table any more (retention dropped it); it cannot be pinned"
            )
        conn.execute("UPDATE sitekb.snapshots SET pinned = %s WHERE snapshot_id = %s", (pinned, snapshot_id))
    return get(conn, snapshot_id)


def apply_retention(conn: psycopg.Connection, site: str, keep: int) -> list[int]:
    """Drop the tables of snapshots beyond the newest ``keep`` that no alias points to and nobody pinned.

    The records stay (history and diffs keep their ids); ``table_name``
    becomes NULL and a published-then-retired snapshot stays ``retired``, a
    rejected one ``rejected``. Returns the ids whose tables were dropped.
    """
    if keep < 1:
        raise ConfigError("retention must keep at least one snapshot")
    with conn.transaction():
        _lock_site(conn, site)
        doomed = [
            row[0]
            for row in conn.execute(
                """SELECT snapshot_id FROM sitekb.snapshots s
                   WHERE site = %s AND NOT pinned AND state <> 'building' AND table_name IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM sitekb.aliases a WHERE a.snapshot_id = s.snapshot_id)
                     AND snapshot_id NOT IN (
                         SELECT snapshot_id FROM sitekb.snapshots WHERE site = %s
                         ORDER BY snapshot_id DESC LIMIT %s)
                   ORDER BY snapshot_id""",
                (site, site, keep),
            )
        ]
        dropped = []
        for snapshot_id in doomed:
            try:
                with conn.transaction():  # a savepoint: a busy table is skipped, the rest still go
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", (RETENTION_LOCK_TIMEOUT,))
                    _drop_snapshot_objects(conn, snapshot_id)
                    conn.execute(
                        """UPDATE sitekb.snapshots
                           SET state = CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'retired' END,
                               table_name = NULL
                           WHERE snapshot_id = %s""",
                        (snapshot_id,),
                    )
                dropped.append(snapshot_id)
            except psycopg.errors.LockNotAvailable:
                continue
    return dropped


# -- diff -----------------------------------------------------------------

@dataclass
class PageChange:
    """One page of a diff: its title and how many of its chunks came and went."""

    url: str
    title: str | None
    chunks_before: int
    chunks_after: int
    chunks_added: int
    chunks_removed: int


@dataclass
class SnapshotDiff:
    """What changed between two snapshots of a site, page by page and chunk by chunk."""

    site: str
    from_snapshot: int | None
    to_snapshot: int
    added: list[PageChange] = field(default_factory=list)
    removed: list[PageChange] = field(default_factory=list)
    changed: list[PageChange] = field(default_factory=list)
    unchanged_pages: int = 0
    chunks_before: int = 0
    chunks_after: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0

    @property
    def churn(self) -> float:
        """Share of the older snapshot's chunks that were replaced or removed."""
        return round(self.chunks_removed / self.chunks_before, 4) if self.chunks_before else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "churn": self.churn}

    def summary(self) -> dict[str, Any]:
        """The compact form stored on the snapshot record: URLs per kind plus chunk churn."""
        return {"against": self.from_snapshot, "added": [p.url for p in self.added],
                "removed": [p.url for p in self.removed], "changed": [p.url for p in self.changed],
                "chunks_added": self.chunks_added, "chunks_removed": self.chunks_removed}


def diff(conn: psycopg.Connection, old: Snapshot | None, new: Snapshot) -> SnapshotDiff:
    """Pages added, removed and changed, and chunk churn, from ``old`` to ``new`` (both built).

    Chunk ids are content-addressed (URL, heading path, text), so a page is
    changed when any of its chunks differs, and unchanged pages cost nothing.
    With no ``old``, every page of ``new`` is added.
    """
    for snap in (old, new):
        if snap is not None and snap.table_name is None:
            raise NotFound(
                f"snapshot {snap.snapshot_id} has no table any more (state {snap.state}); "
                "retention dropped its chunks, so it cannot be compared. Pin snapshots you want to keep."
            )
    new_table = snapshot_table(new.table_name)
    result = SnapshotDiff(site=new.site, from_snapshot=old.snapshot_id if old else None,
                          to_snapshot=new.snapshot_id)
    if old is None:
        query = sql.SQL(
            "SELECT url, max(title), 0, count(*), count(*), 0 FROM {new} GROUP BY url ORDER BY url"
        ).format(new=new_table)
    else:
        query = sql.SQL(
            """WITH n AS (SELECT url, max(title) AS title, count(*) AS chunks FROM {new} GROUP BY url),
                    o AS (SELECT url, max(title) AS title, count(*) AS chunks FROM {old} GROUP BY url),
                    came AS (SELECT url, count(*) AS chunks FROM {new} x
                             WHERE NOT EXISTS (SELECT 1 FROM {old} y WHERE y.chunk_id = x.chunk_id) GROUP BY url),
                    went AS (SELECT url, count(*) AS chunks FROM {old} y
                             WHERE NOT EXISTS (SELECT 1 FROM {new} x WHERE x.chunk_id = y.chunk_id) GROUP BY url)
               SELECT p.url, coalesce(n.title, o.title), coalesce(o.chunks, 0), coalesce(n.chunks, 0),
                      coalesce(came.chunks, 0), coalesce(went.chunks, 0)
               FROM (SELECT url FROM n UNION SELECT url FROM o) p
               LEFT JOIN n ON n.url = p.url LEFT JOIN o ON o.url = p.url
               LEFT JOIN came ON came.url = p.url LEFT JOIN went ON went.url = p.url
               ORDER BY p.url"""
        ).format(new=new_table, old=snapshot_table(old.table_name))
    for url, title, before, after, added, removed in conn.execute(query):
        page = PageChange(url, title, before, after, added, removed)
        result.chunks_before += before
        result.chunks_after += after
        result.chunks_added += added
        result.chunks_removed += removed
        if before == 0:
            result.added.append(page)
        elif after == 0:
            result.removed.append(page)
        elif added or removed:
            result.changed.append(page)
        else:
            result.unchanged_pages += 1
    return result


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
