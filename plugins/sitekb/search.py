"""Search a published snapshot: vector, keyword or hybrid (reciprocal rank fusion).

The query is always embedded with the snapshot's own provider, model and
dimensions, whatever the current site config says, so an old snapshot stays
queryable after a model change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import psycopg
from pgvector import Vector
from psycopg import sql
from psycopg.rows import class_row

from sitekb import snapshots
from sitekb.db import snapshot_table
from sitekb.embedding import get_embedder
from sitekb.errors import ConfigError

MODES = ("vector", "keyword", "hybrid")
RRF_K = 60          # the constant of reciprocal rank fusion (Cormack et al.)
CANDIDATES = 50     # per-list depth fused in hybrid mode


@dataclass
class Passage:
    chunk_id: str
    url: str
    title: str | None
    heading_path: list[str]
    content: str
    score: float
    snapshot_id: int = 0

    def snippet(self, width: int = 220) -> str:
        text = " ".join(self.content.split())
        return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"

    def as_dict(self) -> dict:
        out = asdict(self)
        out["snippet"] = self.snippet()
        return out


@lru_cache(maxsize=4)
def _embedder(provider: str, model: str, dimensions: int):
    return get_embedder(provider, model, dimensions if provider == "openai" else None)


def _vector_hits(conn, table, query_vector, k: int) -> list[Passage]:
    with conn.cursor(row_factory=class_row(Passage)) as cur:
        return cur.execute(
            sql.SQL(
                """SELECT chunk_id, url, title, heading_path, content,
                          1 - (embedding <=> %s) AS score
                   FROM {} ORDER BY embedding <=> %s LIMIT %s"""
            ).format(table),
            (query_vector, query_vector, k),
        ).fetchall()


def _keyword_hits(conn, table, query: str, k: int) -> list[Passage]:
    with conn.cursor(row_factory=class_row(Passage)) as cur:
        return cur.execute(
            sql.SQL(
                """SELECT chunk_id, url, title, heading_path, content,
                          ts_rank_cd(tsv, q)::float8 AS score
                   FROM {}, websearch_to_tsquery('english', %s) q
                   WHERE tsv @@ q ORDER BY score DESC, chunk_id LIMIT %s"""
            ).format(table),
            (query, k),
        ).fetchall()


def fuse(*ranked_lists: list[Passage], k: int) -> list[Passage]:
    """Reciprocal rank fusion: score = sum of 1 / (RRF_K + rank) over the lists."""
    scores: dict[str, float] = {}
    best: dict[str, Passage] = {}
    for ranked in ranked_lists:
        for rank, passage in enumerate(ranked, start=1):
            scores[passage.chunk_id] = scores.get(passage.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            best.setdefault(passage.chunk_id, passage)
    ordered = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]
    out = []
    for cid in ordered:
        passage = best[cid]
        passage.score = scores[cid]
        out.append(passage)
    return out


def search(conn: psycopg.Connection, site: str, query: str, *, k: int = 5, mode: str = "vector",
           alias: str | None = snapshots.DEFAULT_ALIAS, snapshot_id: int | None = None) -> tuple[snapshots.Snapshot, list[Passage]]:
    """Top-k passages for ``query`` from the site's aliased (or pinned) snapshot."""
    if mode not in MODES:
        raise ConfigError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
    if not query.strip():
        raise ConfigError("the query is empty")
    if not 1 <= k <= 100:
        raise ConfigError("k must be between 1 and 100")
    snap = snapshots.resolve(conn, site, alias, snapshot_id)
    return snap, search_snapshot(conn, snap, query, k=k, mode=mode)


def search_snapshot(conn: psycopg.Connection, snap: snapshots.Snapshot, query: str, *, k: int = 5,
                    mode: str = "vector") -> list[Passage]:
    """Top-k passages of one built snapshot, whatever its state (the gate uses it before publishing)."""
    table = snapshot_table(snap.table_name)
    hits: list[Passage]
    if mode == "keyword":
        hits = _keyword_hits(conn, table, query, k)
    else:
        vector = Vector(_embedder(snap.embedding_provider, snap.embedding_model, snap.dimensions).embed([query])[0])
        if mode == "vector":
            hits = _vector_hits(conn, table, vector, k)
        else:
            hits = fuse(_vector_hits(conn, table, vector, CANDIDATES), _keyword_hits(conn, table, query, CANDIDATES), k=k)
    for passage in hits:
        passage.snapshot_id = snap.snapshot_id
    return hits
