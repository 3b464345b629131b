"""Snapshot builds, drops and diffs: a snapshot's rows, read as one table.

A snapshot's rows live in immutable segments (:mod:`sitekb.store.segments`):
a refresh writes one delta segment with the chunks that came or changed and
tombstones those that went, sharing every other segment with the snapshot it
builds on; a model change starts a new base segment, so snapshots of different
models live side by side. Readers see one view,
``sitekb_snapshots.snap_<id>`` (the columns a snapshot table always had), its
BM25 postings ``snap_<id>_postings`` (the segments' postings weighted with the
snapshot's own statistics, ``snap_<id>_terms``), and a schema
``sitekb_snap_<id>`` holding a view over each, ``chunks`` and ``postings``:
``sitekb_api.search`` reads them under its search path so that a session plans
its statement once per snapshot. :func:`build` makes them, :func:`drop` removes
them, :func:`diff` compares two snapshots page by page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql

from sitekb.errors import NotFound
from sitekb.store import segments


class Built(Protocol):
    """What a diff needs of a snapshot record (``sitekb.store.snapshots.Snapshot``)."""

    snapshot_id: int
    site: str
    state: str
    table_name: str | None


def qualified(table_name: str) -> sql.Composed:
    """The schema-qualified name of a snapshot table."""
    return sql.Identifier("sitekb_snapshots", table_name)


def build(conn: psycopg.Connection, snapshot_id: int, run_id: str, model: str, dimensions: int) -> dict:
    """Build the snapshot of a run's chunks: a delta segment on the site's newest snapshot, or a new base.

    The run's chunks (with their cached embeddings and full-text vectors) that
    the base snapshot (:func:`sitekb.store.segments.base_for`) does not hold as
    they are go into one delta segment, indexed after its load; the base's
    chunks the run no longer has are tombstoned; every other segment is shared.
    No base (a site's first build, a new model or dimension), or a change
    above :data:`~sitekb.store.segments.REBASE_SHARE` of the base: one new
    base segment with every chunk. Returns the counts (chunks, documents,
    segments, tombstones), the lexemes of its BM25 statistics, how it was made
    (``base_snapshot``, ``delta_rows``, ``new_tombstones``) and how long
    loading and indexing took.

    Build-then-swap: a retry drops the half-built snapshot and starts over; no
    published snapshot, and no segment another snapshot lists, is ever touched.
    """
    started = time.monotonic()
    steps = _Laps(started)
    with conn.transaction():
        drop(conn, snapshot_id)
        site = conn.execute("SELECT site FROM sitekb.snapshots WHERE snapshot_id = %s", (snapshot_id,)).fetchone()[0]
        staged = segments.stage_run(conn, run_id)
        steps.lap("stage")
        base_id = segments.base_for(conn, snapshot_id)
        added = removed = 0
        if base_id is not None:
            added, removed = segments.compare(conn, base_id)
            base_rows = conn.execute("SELECT corpus_chunks FROM sitekb.snapshots WHERE snapshot_id = %s",
                                     (base_id,)).fetchone()[0]
            if removed > segments.REBASE_SHARE * base_rows or added > max(base_rows, 1):
                base_id = None   # most of the base replaced: a new base costs little more, and filters nothing
            steps.lap("compare")
        if base_id is None:
            # Every staged row is read, so hash joins are right; the stages have just written
            # those rows, and without fresh statistics the planner picks per-row nested loops
            # (30x slower at 10k chunks). CREATE TABLE AS lets parallel workers join and read
            # while the leader writes; INSERT ... SELECT never runs in parallel. (A delta reads
            # its few rows' vectors by index, and keeps nested loops.)
            conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
            conn.execute("SELECT set_config('parallel_setup_cost', '0', true), "
                         "set_config('parallel_tuple_cost', '0', true)")
        # Room for the hash joins over the cached vectors (a parallel hash may use this times
        # hash_mem_multiplier per process): with the default 4 MB they spill to disk in batches.
        conn.execute("SELECT set_config('work_mem', '64MB', true)")
        delta = base_id is not None
        segment_id, loaded, connections = None, 0, 0
        if not delta or added:
            stored_in = segments.manifest(conn, base_id)[0].segment_id if delta else None
            segment_id, loaded, connections = segments.load(
                conn, snapshot_id=snapshot_id, site=site, run_id=run_id, model=model, dimensions=dimensions,
                stored_in=stored_in)
        loaded_at = time.monotonic()
        steps.lap("load")
        if segment_id is not None:
            segments.index(conn, segment_id, loaded, dimensions, delta=delta)
            steps.lap("index")
        if delta:
            segments.list_on_base(conn, snapshot_id, base_id, segment_id)
            lexemes = segments.terms_on_base(conn, snapshot_id, base_id, segment_id)
            conn.execute("SELECT sitekb.snapshot_views(%s)", (snapshot_id,))
            steps.lap("manifest")
        else:
            segments.list_base(conn, snapshot_id, segment_id)
            # Keyword search ranks by BM25 with this snapshot's statistics.
            lexemes = conn.execute("SELECT sitekb.build_postings(%s)", (snapshot_id,)).fetchone()[0]
            steps.lap("statistics")
        pages = conn.execute("SELECT count(DISTINCT url) FROM _staged").fetchone()[0]
        listed = segments.manifest(conn, snapshot_id)
        counts = {"chunks": staged, "documents": pages, "segments": len(listed),
                  "tombstones": sum(s.tombstones for s in listed)}
        # The text-search configurations its chunks were parsed with: a question is parsed with each.
        configs = conn.execute(
            """SELECT coalesce(array_agg(DISTINCT c.name ORDER BY c.name), ARRAY['english'])
               FROM sitekb.documents d CROSS JOIN LATERAL (SELECT sitekb.text_config(d.index_language)::text) c(name)
               WHERE d.run_id = %s AND d.status = 'accepted'""", (run_id,)).fetchone()[0]
        conn.execute(
            """UPDATE sitekb.snapshots SET table_name = %s, built_at = now(),
                      counts = counts || %s::jsonb, text_configs = %s
               WHERE snapshot_id = %s""",
            (f"snap_{snapshot_id}", json.dumps(counts), configs, snapshot_id),
        )
    finished = time.monotonic()
    steps.lap("record")
    return {**counts, "steps": steps.seconds, "postings": lexemes, "base_snapshot": base_id,
            "delta_rows": loaded if delta else 0,
            "new_tombstones": removed if delta else 0, "load_connections": connections,
            "load_seconds": round(loaded_at - started, 3), "index_seconds": round(finished - loaded_at, 3)}


class _Laps:
    """Seconds per step of a build, for its result (where a refresh's time goes)."""

    def __init__(self, started: float) -> None:
        self.last, self.seconds = started, {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now


def drop(conn: psycopg.Connection, snapshot_id: int) -> None:
    """Drop what a snapshot's readers read, its manifest, and every segment no other snapshot lists (those a
    half-done build of this snapshot left included)."""
    segments.drop_snapshot(conn, snapshot_id)
    segments.drop_unreferenced(conn, own=snapshot_id)


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

