"""The one query path: a question in, passages with citations out, through ``sitekb_api.search``.

The CLI (``sitekb search``), the quality gate's golden questions, the HTTP API
and so the Python client all call :func:`search`, which embeds the question
with the snapshot's own provider, model, dimensions and server (whatever the
current site config says, so an old snapshot stays queryable after a model
change) and ranks it with the same SQL function a frontend calls over SQL.
What the gate tests is what frontends get. :func:`search_pages` returns pages,
each with its best passages (``sitekb_api.search_pages``). A :class:`Ranking`
says how: at most ``per_page`` passages of a page, hybrid's ``vector_weight``,
the question's ``query_language`` (detected here when keywords are ranked and
nobody names it, so a Spanish question is stemmed as Spanish).

:func:`search` takes a connection, or a function that lends one for a
with-block (a pool's ``connection``): lent, a connection is held for the two
short SQL calls only (resolve the snapshot, then rank), never while the
question is embedded, so a slow embedding server or a model that is still
loading cannot drain the API's pool. A :class:`QuestionCache` keeps the
vectors of recent questions (by model, dimensions, server and the question
with its whitespace collapsed), so a question asked again is not embedded
again, and one asked by many clients at once is embedded once.

An operator (the gate, ``sitekb search --snapshot ID``) may read a snapshot
that is built but not published with ``unpublished=True``: the SQL API allows
that only to a session that asks for it and may use schema ``sitekb``, which
the reader role never may.

Settings read (passed in): the OpenAI key and server of a snapshot embedded by
an OpenAI-compatible server (:func:`sitekb.embedding.openai_endpoint`).
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import date

import psycopg
from pgvector import Vector
from psycopg.rows import dict_row

from sitekb.embedding import query_embedder
from sitekb.errors import (ConfigError, EmbeddingUnavailable, NotFound, QuestionEmbeddingDelayed, SitekbError,
                           TransientError)
from sitekb.passages import (DEFAULT_ALIAS, DEFAULT_MODE, DEFAULT_PAGE_PASSAGES, MAX_K, MAX_PAGE_PASSAGES, MAX_PAGES,
                             MAX_QUERY_CHARS, MODES, Page, PagesResult, Passage, SearchResult, snippet_of)
from sitekb.settings import Settings


@dataclass(frozen=True)
class Filters:
    """Optional restrictions of a search; None means no restriction."""

    url_prefix: str | None = None
    tags: tuple[str, ...] | None = None          # any of these tags
    language: str | None = None                  # "en" also matches "en-GB"
    published_after: date | None = None          # inclusive
    published_before: date | None = None         # inclusive


NO_FILTERS = Filters()


@dataclass(frozen=True)
class Ranking:
    """How passages are ranked and grouped; None means the SQL API's default."""

    per_page: int | None = None                  # at most this many passages of one page
    vector_weight: float | None = None           # hybrid: the vector leg's weight, 0..1 (default 0.75)
    query_language: str | None = None            # the question's language (default: the snapshot's languages)


DEFAULT_RANKING = Ranking()

# A function that lends a connection for a with-block: ``pool.connection``.
Lender = Callable[[], AbstractContextManager[psycopg.Connection]]


def normalise_question(query: str) -> str:
    """The question as it is embedded and cached: NFC, whitespace collapsed, trimmed; case kept."""
    return " ".join(unicodedata.normalize("NFC", query).split())


class QuestionCache:
    """The vectors of the last ``size`` questions, by (provider, model, dimensions, server, question); thread-safe.

    A question being embedded is embedded once: other threads asking it wait for
    that vector instead of sending it too (a failure lets the next one try).
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError(f"a question cache holds at least one question, not {size}")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[tuple, Vector] = OrderedDict()
        self._pending: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def get_or_embed(self, key: tuple, embed: Callable[[], Vector]) -> Vector:
        """The vector of ``key``: cached, awaited from the thread embedding it, or ``embed()``-ed now."""
        while True:
            with self._lock:
                if key in self._vectors:
                    self._vectors.move_to_end(key)
                    self.hits += 1
                    return self._vectors[key]
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            pending.wait()
        try:
            vector = embed()
            with self._lock:
                self._vectors[key] = vector
                self._vectors.move_to_end(key)
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
            return vector
        finally:
            with self._lock:
                del self._pending[key]
            pending.set()


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


def search(conn: psycopg.Connection | Lender, settings: Settings, query: str, *, site: str | None = None,
           k: int = 5, mode: str = DEFAULT_MODE, alias: str | None = None, snapshot_id: int | None = None,
           filters: Filters = NO_FILTERS, ranking: Ranking = DEFAULT_RANKING, unpublished: bool = False,
           cache: QuestionCache | None = None) -> SearchResult:
    """Top-k passages for ``query`` from a site's alias (default production) or a pinned snapshot.

    ``conn``: a connection, or a function lending one (``pool.connection``), which
    is then borrowed to resolve the snapshot, given back while the question is
    embedded, and borrowed again to rank. ``cache``: where question vectors are
    kept between calls (none: every call embeds).

    Raises NotFound (no such site, alias or snapshot), ConfigError (a request the
    SQL API refuses), EmbeddingUnavailable (the snapshot's model refuses to embed
    the question) or TransientError (its server does not answer now).
    """
    check_request(query, k, mode)
    check_ranking(ranking)
    ranking = _with_question_language(ranking, query, mode, filters)
    snap, alias, rows = _ranked(conn, settings, query, "search", site=site, k=k, mode=mode, alias=alias,
                                snapshot_id=snapshot_id, filters=filters, ranking=ranking, unpublished=unpublished,
                                cache=cache)
    passages = [Passage(snippet=snippet_of(r["content"]), **{key: v for key, v in r.items() if key != "snapshot_id"})
                for r in rows]
    return SearchResult(query=query, site=snap["site"], mode=mode, alias=alias, snapshot_id=snap["snapshot_id"],
                        embedding_model=snap["embedding_model"], passages=passages)


def search_pages(conn: psycopg.Connection | Lender, settings: Settings, query: str, *, site: str | None = None,
                 k: int = 5, mode: str = DEFAULT_MODE, alias: str | None = None, snapshot_id: int | None = None,
                 filters: Filters = NO_FILTERS, passages: int = DEFAULT_PAGE_PASSAGES,
                 ranking: Ranking = DEFAULT_RANKING, unpublished: bool = False,
                 cache: QuestionCache | None = None) -> PagesResult:
    """The top-k pages for ``query`` (``sitekb_api.search_pages``), each with up to ``passages`` of its best passages.

    The same snapshot, modes, filters and ranking as :func:`search`; a page ranks by its best passage.
    """
    check_request(query, 1, mode)
    check_ranking(ranking)
    if not 1 <= k <= MAX_PAGES:
        raise ConfigError(f"k must be between 1 and {MAX_PAGES} pages")
    if not 1 <= passages <= MAX_PAGE_PASSAGES:
        raise ConfigError(f"passages must be between 1 and {MAX_PAGE_PASSAGES} a page")
    ranking = _with_question_language(ranking, query, mode, filters)
    snap, alias, rows = _ranked(conn, settings, query, "search_pages", site=site, k=k, mode=mode, alias=alias,
                                snapshot_id=snapshot_id, filters=filters, ranking=ranking, unpublished=unpublished,
                                cache=cache, passages=passages)
    pages = [Page(rank=r["rank"], url=r["url"], title=r["title"], score=r["score"], language=r["language"],
                  tags=r["tags"] or [], published=r["published"],
                  passages=[{**p, "snippet": snippet_of(p["content"])} for p in r["passages"]])
             for r in rows]
    return PagesResult(query=query, site=snap["site"], mode=mode, alias=alias, snapshot_id=snap["snapshot_id"],
                       embedding_model=snap["embedding_model"], pages=pages)


def check_ranking(ranking: Ranking) -> None:
    """Reject ranking options the SQL API would refuse, with the same words."""
    if ranking.per_page is not None and not 1 <= ranking.per_page <= MAX_K:
        raise ConfigError(f"per_page must be between 1 and {MAX_K}")
    if ranking.vector_weight is not None and not 0 <= ranking.vector_weight <= 1:
        raise ConfigError("vector_weight must be between 0 and 1 (1 ranks by the vector leg alone, 0 by keywords)")


def _with_question_language(ranking: Ranking, query: str, mode: str, filters: Filters) -> Ranking:
    """``ranking`` with the question's language detected, when keywords are ranked and nobody named one.

    A Spanish question is then stemmed as Spanish only, and does not also match
    English pages through a Spanish stem that happens to be an English word
    ("cancel"). The SQL API falls back to the snapshot's languages for a language
    it has no pages in.
    """
    if mode == "vector" or ranking.query_language or filters.language:
        return ranking
    from sitekb.quality.measures import detect_question_language

    detected = detect_question_language(query)
    return replace(ranking, query_language=detected) if detected else ranking


def _ranked(conn, settings: Settings, query: str, function: str, *, site, k, mode, alias, snapshot_id, filters,
            ranking, unpublished, cache, passages=None) -> tuple[dict, str | None, list[dict]]:
    """Resolve the snapshot, embed the question (no connection held), rank: (snapshot, alias read, rows)."""
    lend: Lender = conn if callable(conn) else (lambda: nullcontext(conn))
    alias = None if snapshot_id is not None else (alias or DEFAULT_ALIAS)
    for attempt in range(2):
        with lend() as c, _session(c, unpublished):
            snap = resolve(c, site, alias, snapshot_id)
        vector = None if mode == "keyword" else embed_question(snap, query, settings, cache)
        try:
            with lend() as c, _session(c, unpublished):
                return snap, alias, _rank(c, function, snap, query, vector, k, mode, filters, ranking, passages)
        except NotFound:
            if attempt == 0 and snapshot_id is None:
                continue  # retention dropped the aliased snapshot just after the alias moved: resolve again
            raise
    raise AssertionError("unreachable")


def resolve(conn: psycopg.Connection, site: str | None, alias: str | None, snapshot_id: int | None) -> dict:
    """The snapshot a request reads (``sitekb_api.resolve_snapshot``): id, site, model, dimensions, server."""
    with _errors(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM sitekb_api.resolve_snapshot(%s, %s, %s)",
                           (site, alias, snapshot_id)).fetchone()


def embed_question(snap: dict, query: str, settings: Settings, cache: QuestionCache | None = None) -> Vector:
    """The question's vector, from the model (and server) that embedded the snapshot (through ``cache``)."""
    text = normalise_question(query)
    try:
        # Inside: a snapshot whose model this process cannot make (unknown here, wrong dimensions) is a 503 too.
        embedder = query_embedder(snap["embedding_provider"], snap["embedding_model"], snap["dimensions"], settings,
                                  base_url=snap["embedding_base_url"], api_key_env=snap["embedding_api_key_env"])
        if cache is None:
            return Vector(embedder.embed([text])[0])
        key = (embedder.provider, embedder.model, embedder.dimensions, getattr(embedder, "base_url", None), text)
        return cache.get_or_embed(key, lambda: Vector(embedder.embed([text])[0]))
    except SitekbError as exc:
        raise EmbeddingUnavailable(f"cannot embed the query with {snap['embedding_model']}: {exc}") from exc
    except TransientError as exc:
        raise QuestionEmbeddingDelayed(f"cannot embed the query with {snap['embedding_model']} now: {exc}") from exc


def explain_chunks(conn: psycopg.Connection, site: str | None, chunk_ids: list[str], *, alias: str | None = None,
                   snapshot_id: int | None = None, unpublished: bool = False) -> list[dict]:
    """``sitekb_api.explain`` of these chunks, in their order (:mod:`sitekb.explain` words it)."""
    with _session(conn, unpublished), _errors():
        return [r[0] for r in conn.execute(
            "SELECT * FROM sitekb_api.explain(%s, %s, alias => %s, snapshot_id => %s)",
            (site, chunk_ids, alias, snapshot_id)).fetchall()]


def only_site(conn: psycopg.Connection, alias: str) -> str:
    """The one site published under ``alias`` (a request may leave the site out then)."""
    sites = [r[0] for r in conn.execute("SELECT DISTINCT site FROM sitekb_api.aliases WHERE alias = %s ORDER BY 1",
                                        (alias,))]
    if len(sites) == 1:
        return sites[0]
    if not sites:
        raise NotFound(f"no site has a snapshot published as {alias!r} yet")
    raise ConfigError(f"several sites are published ({', '.join(sites)}): name one in 'site'")


def published(conn: psycopg.Connection, *, site: str | None = None, snapshot_id: int | None = None,
              limit: int = 50) -> list[dict]:
    """Snapshots a frontend may query (``sitekb_api.snapshots``), newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT * FROM sitekb_api.snapshots
               WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(id)s::bigint IS NULL OR snapshot_id = %(id)s)
               ORDER BY snapshot_id DESC LIMIT %(limit)s""",
            {"site": site, "id": snapshot_id, "limit": limit},
        ).fetchall()


def schema_version(conn: psycopg.Connection) -> int | None:
    """The newest migration the database has (``sitekb_api.schema_version``)."""
    return conn.execute("SELECT sitekb_api.schema_version()").fetchone()[0]


def _rank(conn: psycopg.Connection, function: str, snap: dict, query: str, vector: Vector | None, k: int, mode: str,
          filters: Filters, ranking: Ranking, passages: int | None) -> list[dict]:
    """Rows of ``sitekb_api.search`` or ``sitekb_api.search_pages`` (passages per page) for one snapshot."""
    args = {"site": snap["site"], "query": query, "query_embedding": vector, "k": k, "mode": mode,
            "snapshot_id": snap["snapshot_id"], "url_prefix": filters.url_prefix,
            "tags": list(filters.tags) if filters.tags else None, "language": filters.language,
            "published_after": filters.published_after, "published_before": filters.published_before,
            "query_language": ranking.query_language, "vector_weight": ranking.vector_weight}
    if function == "search":
        args["per_page"] = ranking.per_page
    else:
        args["passages"] = passages
    if args["vector_weight"] is None:
        del args["vector_weight"]       # NULL would mean the SQL default too; leaving it out says so
    named = ", ".join(f"{name} => %({name})s" for name in args if name != "site")
    with _errors(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT * FROM sitekb_api.{function}(%(site)s, {named})", args).fetchall()


@contextmanager
def _session(conn: psycopg.Connection, unpublished: bool) -> Iterator[None]:
    """A transaction that may read built, unpublished snapshots (operators only), or nothing special."""
    if not unpublished:
        yield
        return
    with conn.transaction():
        conn.execute("SELECT set_config('sitekb.include_unpublished', 'on', true)")
        yield


@contextmanager
def _errors() -> Iterator[None]:
    """The SQL API's errors as sitekb's: P0002 is NotFound, 22023 a ConfigError."""
    try:
        yield
    except psycopg.errors.NoDataFound as exc:
        raise NotFound(_message(exc)) from exc
    except psycopg.errors.InvalidParameterValue as exc:
        raise ConfigError(_message(exc)) from exc


def _message(exc: psycopg.Error) -> str:
    hint = exc.diag.message_hint
    return (exc.diag.message_primary or str(exc)) + (f" ({hint})" if hint else "")
