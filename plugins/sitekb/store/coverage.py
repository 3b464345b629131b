"""What a snapshot covers (``sitekb.snapshot_coverage``), and the reads :mod:`sitekb.coverage` computes it from.

The reads go to the snapshot's own table (``sitekb_snapshots.snap_<id>``):
chunks per page with the page's language and tags, a bounded, deterministic
sample of chunks with their vectors and texts (to fit and label the topic
clusters), and the size of every cluster, each chunk assigned to its nearest
centroid in SQL so that no more than the sample's vectors ever leave the
database. The record is one JSON document per snapshot, written with an
upsert (a retried build writes it again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sitekb.store.snapshot_tables import qualified


@dataclass(frozen=True)
class PageRow:
    """One page of a snapshot: its URL, language, tags and how many chunks it has."""

    url: str
    language: str | None
    tags: list[str]
    chunks: int


@dataclass(frozen=True)
class SampledChunk:
    """A chunk of the clustering sample: its vector and the words a label is made of."""

    chunk_id: str
    embedding: np.ndarray
    title: str
    heading_path: list[str]
    content: str


def pages(conn: psycopg.Connection, table_name: str) -> list[PageRow]:
    """Every page of the snapshot table with its chunk count (a page's language and tags are its document's)."""
    rows = conn.execute(sql.SQL(
        """SELECT url, max(language), max(tags), count(*)
           FROM {} GROUP BY url ORDER BY url""").format(qualified(table_name))).fetchall()
    return [PageRow(url, language, list(tags or []), int(n)) for url, language, tags, n in rows]


def sample(conn: psycopg.Connection, table_name: str, limit: int) -> list[SampledChunk]:
    """At most ``limit`` chunks, the same ones on every call: chunk ids are content hashes, so their order is
    a fixed shuffle of the snapshot (and the primary key reads it in that order)."""
    rows = conn.execute(sql.SQL(
        """SELECT chunk_id, embedding, coalesce(title, ''), coalesce(heading_path, '{{}}'), content
           FROM {} ORDER BY chunk_id LIMIT %s""").format(qualified(table_name)), (limit,)).fetchall()
    return [SampledChunk(cid, _array(vector), title, list(path), content) for cid, vector, title, path, content in rows]


def _array(vector) -> np.ndarray:
    # pgvector's loader gives a numpy array or a Vector, depending on its version.
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)


def cluster_sizes(conn: psycopg.Connection, table_name: str, centroids: np.ndarray) -> list[int]:
    """How many chunks of the whole table are nearest (cosine) to each centroid, in centroid order.

    The centroids are constants of the statement (parsed once, not once per row); each row's distances to them
    form a small array whose smallest entry names its cluster (ties: the first). 100k chunks of 384
    dimensions and 8 centroids take about a second.
    """
    literals = [sql.Literal("[" + ",".join(f"{x:.7g}" for x in row) + "]")
                for row in np.asarray(centroids, dtype=np.float32)]
    if not literals:
        return []
    distances = sql.SQL(", ").join(sql.SQL("t.embedding <=> {}::vector").format(lit) for lit in literals)
    rows = conn.execute(sql.SQL(
        """SELECT nearest, count(*) FROM (
               SELECT (SELECT (u.i - 1)::int FROM unnest(ARRAY[{distances}]) WITH ORDINALITY AS u(d, i)
                       ORDER BY u.d, u.i LIMIT 1) AS nearest
               FROM {table} t) x
           GROUP BY nearest""").format(distances=distances, table=qualified(table_name))).fetchall()
    sizes = [0] * len(literals)
    for index, n in rows:
        if index is not None:
            sizes[index] = int(n)
    return sizes


def save(conn: psycopg.Connection, snapshot_id: int, record: dict) -> None:
    """Store (or replace) the snapshot's coverage record."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO sitekb.snapshot_coverage (snapshot_id, coverage) VALUES (%s, %s)
               ON CONFLICT (snapshot_id) DO UPDATE SET coverage = EXCLUDED.coverage, computed_at = now()""",
            (snapshot_id, json.dumps(record, default=str)))


def get(conn: psycopg.Connection, snapshot_id: int) -> dict | None:
    """The snapshot's coverage record, or None when it has none (built before coverage was computed)."""
    row = conn.execute("SELECT coverage FROM sitekb.snapshot_coverage WHERE snapshot_id = %s",
                       (snapshot_id,)).fetchone()
    return row[0] if row else None


def of_snapshots(conn: psycopg.Connection, snapshot_ids: Sequence[int]) -> dict[int, dict]:
    """The coverage records of these snapshots (those that have one), by snapshot id."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT snapshot_id, coverage FROM sitekb.snapshot_coverage WHERE snapshot_id = ANY(%s)",
                           (list(snapshot_ids),)).fetchall()
    return {r["snapshot_id"]: r["coverage"] for r in rows}
