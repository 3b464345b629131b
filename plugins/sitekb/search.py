"""Search a snapshot: vector, keyword or hybrid (reciprocal rank fusion).

The ranking itself lives in the database (``sitekb.search_table``, migration
0005), so the CLI, the golden-question gate, the HTTP API and a frontend on
the SQL API (``sitekb_api.search``) all return the same passages for the same
question. This module embeds the query with the snapshot's own provider,
model and dimensions, whatever the current site config says, so an old
snapshot stays queryable after a model change.

Vector is the default mode. On the demo site's golden questions hybrid ties
with it (10/10 each at k = 1 and k = 5; keyword 9/10) without winning, and at
100k chunks hybrid costs a full-text ranking per query (see the README), so
hybrid stays a choice (``mode="hybrid"``) rather than the default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from functools import lru_cache

import psycopg
from pgvector import Vector
from psycopg.rows import class_row

from sitekb import snapshots
from sitekb.embedding import get_embedder, openai_endpoint
from sitekb.errors import ConfigError, NotFound
from sitekb.settings import Settings

MODES = ("vector", "keyword", "hybrid")
DEFAULT_MODE = "vector"
MAX_K = 100
MAX_QUERY_CHARS = 2000
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
    rank: int = 0
    language: str | None = None
    tags: list[str] = field(default_factory=list)
    published: str | None = None

    def snippet(self, width: int = 220) -> str:
        return snippet_of(self.content, width)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["snippet"] = self.snippet()
        return out


def snippet_of(content: str, width: int = 220) -> str:
    """The start of a passage on one line, cut at a word boundary."""
    text = " ".join(content.split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


@dataclass(frozen=True)
class Filters:
    """Optional restrictions of a search; None means no restriction."""

    url_prefix: str | None = None
    tags: tuple[str, ...] | None = None          # any of these tags
    language: str | None = None                  # "en" also matches "en-GB"
    published_after: date | None = None          # inclusive
    published_before: date | None = None         # inclusive

    def params(self) -> tuple:
        return (self.url_prefix or None, list(self.tags) if self.tags else None, self.language or None,
                self.published_after, self.published_before)


NO_FILTERS = Filters()


@lru_cache(maxsize=8)
def _embedder(provider: str, model: str, dimensions: int, base_url: str | None, api_key_env: str | None):
    if provider != "openai":
        return get_embedder(provider, model)
    settings = Settings.from_env()
    # Resolved as when the snapshot was built, from what it recorded.
    api_key, server = openai_endpoint(settings, api_key_env, base_url)
    return get_embedder(provider, model, dimensions, settings, api_key=api_key, base_url=server)


def embed_query(snap_provider: str, snap_model: str, dimensions: int, query: str, *,
                base_url: str | None = None, api_key_env: str | None = None) -> Vector:
    """The query vector, from the model (and server) that embedded the snapshot."""
    return Vector(_embedder(snap_provider, snap_model, dimensions, base_url, api_key_env).embed([query])[0])


def check_request(query: str, k: int, mode: str) -> None:
    """Reject a malformed request with a message that says what is wrong."""
    if mode not in MODES:
        raise ConfigError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
    if not query or not query.strip():
        raise ConfigError("the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise ConfigError(f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS} are accepted")
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}")


def search(conn: psycopg.Connection, site: str, query: str, *, k: int = 5, mode: str = DEFAULT_MODE,
           alias: str | None = snapshots.DEFAULT_ALIAS, snapshot_id: int | None = None,
           filters: Filters = NO_FILTERS) -> tuple[snapshots.Snapshot, list[Passage]]:
    """Top-k passages for ``query`` from the site's aliased (or pinned) snapshot (operator view)."""
    check_request(query, k, mode)
    snap = snapshots.resolve(conn, site, alias, snapshot_id)
    if snapshot_id is not None and snap.site != site:
        raise NotFound(f"snapshot {snapshot_id} belongs to site {snap.site!r}, not {site!r}")
    return snap, search_snapshot(conn, snap, query, k=k, mode=mode, filters=filters)


def search_snapshot(conn: psycopg.Connection, snap: snapshots.Snapshot, query: str, *, k: int = 5,
                    mode: str = DEFAULT_MODE, filters: Filters = NO_FILTERS) -> list[Passage]:
    """Top-k passages of one built snapshot, whatever its state (the gate uses it before publishing)."""
    check_request(query, k, mode)
    if snap.table_name is None:
        raise NotFound(f"snapshot {snap.snapshot_id} has no table (state {snap.state}); it cannot be searched")
    vector = None if mode == "keyword" else embed_query(
        snap.embedding_provider, snap.embedding_model, snap.dimensions, query,
        base_url=snap.embedding_base_url, api_key_env=snap.embedding_api_key_env)
    with conn.cursor(row_factory=class_row(Passage)) as cur:
        hits = cur.execute(
            """SELECT chunk_id, url, title, heading_path, content, score, %s::bigint AS snapshot_id, rank,
                      language, tags, published
               FROM sitekb.search_table(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (snap.snapshot_id, snap.table_name, mode, query, vector, k, *filters.params(), CANDIDATES),
        ).fetchall()
    return hits
