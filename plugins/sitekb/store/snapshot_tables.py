"""Snapshot tables: a snapshot's chunks with their vectors, loaded once, indexed after the load.

A snapshot is one table ``sitekb_snapshots.snap_<id>`` (fixed vector dimension,
so an HNSW index fits; a model change starts a new table, and snapshots of
different models live side by side), its BM25 postings
``sitekb_snapshots.snap_<id>_postings`` (``sitekb.build_postings``: each
lexeme's chunks with their precomputed BM25 weights, for keyword search) and a
schema ``sitekb_snap_<id>`` holding a view over each, ``chunks`` and
``postings``: ``sitekb_api.search`` reads them under its search path so that a
session plans its statement once per snapshot.
:func:`build` creates both, :func:`drop` removes both, :func:`diff` compares
two snapshots page by page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql

from sitekb.errors import NotFound, SitekbError


class Built(Protocol):
    """What a diff needs of a snapshot record (``sitekb.store.snapshots.Snapshot``)."""

    snapshot_id: int
    site: str
    state: str
    table_name: str | None


def qualified(table_name: str) -> sql.Composed:
    """The schema-qualified name of a snapshot table."""
    return sql.Identifier("sitekb_snapshots", table_name)


def search_schema(snapshot_id: int) -> sql.Identifier:
    """The schema whose view ``chunks`` sitekb_api.search reads."""
    return sql.Identifier(f"sitekb_snap_{snapshot_id}")


def build(conn: psycopg.Connection, snapshot_id: int, run_id: str, model: str, dimensions: int) -> dict:
    """Load the run's chunks with their cached embeddings and full-text vectors into a fresh table, then index it.

    Returns the counts (chunks, documents, BM25 postings) and how long loading and indexing took.

    Build-then-swap: a retry drops the half-built table of this snapshot and
    starts over; no published table is ever touched.
    """
    table_name = f"snap_{snapshot_id}"
    table = qualified(table_name)
    started = time.monotonic()
    with conn.transaction():
        drop(conn, snapshot_id)
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
                          coalesce(d.index_language, d.language) AS language, d.tags, d.published, e.embedding::vector({dims}) AS embedding,
                          -- The chunk stage cached the full-text vectors (sitekb.store.fulltext); one it
                          -- missed (a run chunked before migration 0007) is computed here.
                          coalesce(f.tsv, sitekb.fulltext_vector(sitekb.text_config(d.index_language), d.title, c.heading_path, c.text)) AS tsv
                   FROM sitekb.chunks c
                   JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
                   JOIN sitekb.embedding_cache e
                     ON e.model = {model} AND e.dimensions = {dims} AND e.text_hash = c.text_hash
                   LEFT JOIN sitekb.fulltext_cache f ON f.key = sitekb.fulltext_key(sitekb.text_config(d.index_language), d.title,
                                                                      c.heading_path, c.text)
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
        # Keyword search ranks by BM25 with this snapshot's statistics, precomputed per posting.
        postings = conn.execute("SELECT sitekb.build_postings(%s)", (snapshot_id,)).fetchone()[0]
        pages = conn.execute(sql.SQL("SELECT count(DISTINCT url) FROM {}").format(table)).fetchone()[0]
        counts = {"chunks": loaded, "documents": pages}
        # The text-search configurations its chunks were parsed with: a question is parsed with each.
        configs = conn.execute(
            """SELECT coalesce(array_agg(DISTINCT c.name ORDER BY c.name), ARRAY['english'])
               FROM sitekb.documents d CROSS JOIN LATERAL (SELECT sitekb.text_config(d.index_language)::text) c(name)
               WHERE d.run_id = %s AND d.status = 'accepted'""", (run_id,)).fetchone()[0]
        conn.execute(
            """UPDATE sitekb.snapshots SET table_name = %s, built_at = now(),
                      counts = counts || %s::jsonb, text_configs = %s
               WHERE snapshot_id = %s""",
            (table_name, json.dumps(counts), configs, snapshot_id),
        )
        # The SQL API reads the table through the view "chunks" of schema sitekb_snap_<id>, so
        # that a session caches its plan per snapshot; one SQL function makes that view, for a
        # new snapshot and for any that lacks it. Only the owner may read it.
        conn.execute("SELECT sitekb.ensure_search_views()")
    finished = time.monotonic()
    return {**counts, "postings": postings, "load_seconds": round(loaded_at - started, 3),
            "index_seconds": round(finished - loaded_at, 3)}


def drop(conn: psycopg.Connection, snapshot_id: int) -> None:
    """Drop a snapshot's table and postings (with their indexes) and the view schema the SQL API reads them through."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(search_schema(snapshot_id)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(f"snap_{snapshot_id}_postings")))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(f"snap_{snapshot_id}")))


def _index_memory_mb(rows: int, dimensions: int) -> int:
    need = rows * (dimensions * 4 + 300) * 1.3 / 2**20
    return int(min(2048, max(64, need)))


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


def diff(conn: psycopg.Connection, old: Built | None, new: Built) -> SnapshotDiff:
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
    new_table = qualified(new.table_name)
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
        ).format(new=new_table, old=qualified(old.table_name))
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


def page_chunks(conn: psycopg.Connection, snap: Built, urls: Sequence[str]) -> dict[str, list[tuple]]:
    """The chunks of these pages in one built snapshot, in page order: ``{url: [(chunk_id, heading_path, text)]}``."""
    out: dict[str, list[tuple]] = {url: [] for url in urls}
    if not urls:
        return out
    rows = conn.execute(
        sql.SQL("SELECT url, chunk_id, heading_path, content FROM {t} WHERE url = ANY(%s) ORDER BY url, seq")
        .format(t=qualified(snap.table_name)), (list(urls),))
    for url, chunk_id, heading_path, content in rows:
        out[url].append((chunk_id, list(heading_path or ()), content))
    return out

