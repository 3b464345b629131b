"""The HTTP query API and search page (`sitekb serve`): FastAPI over the SQL API.

Endpoints:

- ``POST /v1/search``: top-k passages with citations for a question, from a
  site's alias (default ``production``) or a pinned snapshot; vector, keyword
  or hybrid; optional filters. It runs :func:`sitekb.query.search`, the one
  query path: the question is embedded with the model that embedded the
  snapshot, then ranked by ``sitekb_api.search``, the function a frontend calls
  over SQL and the quality gate asks its golden questions through. At most
  ``per_page`` passages (default 2) come from one page.
- ``POST /v1/pages``: the top-k pages, each with its best passages
  (``sitekb_api.search_pages``), for a frontend that cites pages.
- ``POST /v1/explain``: the same request as ``/v1/search``; each passage found
  comes with why (``sitekb_api.explain``, :mod:`sitekb.explain`): its page and
  fetch, what the extractor cut, the versions that made it, the snapshot and who
  published it, the quality checks, approvals and corrections, the page's history.
- ``GET /v1/snapshots`` and ``GET /v1/snapshots/{id}``: the snapshots a
  frontend may query (published, or published before and not yet retired).
- ``GET /healthz`` (the process answers), ``GET /readyz`` (the database
  answers and is migrated to this version's schema).
- ``GET /openapi.json``: the OpenAPI spec; ``GET /``: a search page for people.

Everything reads through ``sitekb_api`` only, so the server may connect as the
read-only ``sitekb_reader`` role. API keys are optional: with none configured
the API is open (it binds to 127.0.0.1 by default); with keys, every ``/v1``
call needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

Every text a request carries refuses NUL and lone surrogates, and every id is a
Postgres bigint (422, never a 500); an embedding server that is down is a 503
that names no server. Every response carries a Content-Security-Policy (the
page's own inline script and style allowed by hash) and ``nosniff``; a Host
other than the loopback names, the bound address and ``Settings.allowed_hosts``
is refused with 400 (DNS rebinding).

Routes are the module-level functions below; :func:`create_app` only wires
them to a connection pool, the settings, the keys and a cache of question
vectors. The pool checks a connection before lending it, so the first request
after a database restart gets a fresh one, not the dead one it held. A search
borrows a connection only for its short SQL calls: never while its question is
embedded (a slow embedding server, the local model loading), so a burst of new
questions cannot leave the other requests without a connection. A question
asked again is answered with its cached vector (:class:`sitekb.query.QuestionCache`).

Settings read (passed in): ``Settings.api_keys``, ``Settings.allowed_hosts``, ``Settings.api_database_url``
(e.g. a URL of the sitekb_reader role; default the database URL every command
uses), and the OpenAI key and server of snapshots embedded by one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from base64 import b64encode
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sitekb import __version__, explain as explaining, query, store
from sitekb.errors import ConfigError, EmbeddingUnavailable, NotFound, TransientError
from sitekb.passages import (DEFAULT_ALIAS, DEFAULT_MODE, DEFAULT_PAGE_PASSAGES, DEFAULT_PER_PAGE,
                             DEFAULT_VECTOR_WEIGHT, MAX_K, MAX_PAGE_PASSAGES, MAX_PAGES, MAX_QUERY_CHARS, Mode, Page,
                             Passage)
from sitekb.redaction import redact
from sitekb.settings import Settings
from sitekb.store.schema import latest_version

SITE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
BIGINT_MAX = 2**63 - 1          # ids are Postgres bigints: a larger number is refused, not sent
log = logging.getLogger(__name__)


# -- field types ------------------------------------------------------------

def _safe_text(text: str) -> str:
    # Postgres text cannot hold NUL, and a lone surrogate (JSON "\ud800") cannot be encoded
    # as UTF-8: both would fail deep in the driver as a 500, so every text field refuses them here.
    if "\x00" in text:
        raise ValueError("text may not contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None
    return text


# Every text a request carries (body, query string or path) is one of these.
Text = Annotated[str, AfterValidator(_safe_text)]
# Every id a request carries: a positive Postgres bigint.
BigInt = Annotated[int, Field(ge=1, le=BIGINT_MAX)]


# -- payloads ---------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


LANGUAGE_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


class SearchFilters(_Strict):
    """Optional restrictions; every one given must hold."""

    url_prefix: Text | None = Field(default=None, max_length=2000, description="Only URLs starting with this.")
    tags: list[Annotated[Text, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=20, description="Only pages with at least one of these tags.")
    language: Text | None = Field(default=None, pattern=LANGUAGE_TAG,
                                 description="Language code; 'en' also matches 'en-GB'.")
    published_after: date | None = Field(default=None, description="Published on or after (inclusive).")
    published_before: date | None = Field(default=None, description="Published on or before (inclusive).")

    @model_validator(mode="after")
    def _ordered_dates(self) -> "SearchFilters":
        if self.published_after and self.published_before and self.published_after > self.published_before:
            raise ValueError("published_after is later than published_before")
        return self

    def to_query(self) -> query.Filters:
        return query.Filters(url_prefix=self.url_prefix, tags=tuple(self.tags) if self.tags else None,
                             language=self.language, published_after=self.published_after,
                             published_before=self.published_before)


class _Question(_Strict):
    """What every search request carries: the question, where to look, how to rank."""

    query: Text = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The question, in plain words.")
    site: Text | None = Field(default=None, pattern=SITE_PATTERN,
                             description="Site name; may be left out when only one site is published.")
    mode: Mode = Field(default=DEFAULT_MODE)
    alias: Text | None = Field(default=None, min_length=1, max_length=63,
                              description=f"Alias to read (default {DEFAULT_ALIAS}).")
    snapshot: BigInt | None = Field(default=None, description="Pin this snapshot id instead of an alias.")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    query_language: Text | None = Field(
        default=None, pattern=LANGUAGE_TAG,
        description="The question's language ('es'): its words are stemmed that way. Default: the language filter, "
                    "else the language detected in the question, else each language of the snapshot.")
    vector_weight: float | None = Field(
        default=None, ge=0, le=1,
        description=f"Hybrid mode: the weight of the vector leg's standardised score (default {DEFAULT_VECTOR_WEIGHT}; "
                    "the keyword leg has the rest).")

    def ranking(self, per_page: int | None = None) -> query.Ranking:
        return query.Ranking(per_page=per_page, vector_weight=self.vector_weight, query_language=self.query_language)


class SearchRequest(_Question):
    k: int = Field(default=5, ge=1, le=MAX_K, description="How many passages.")
    per_page: int | None = Field(
        default=DEFAULT_PER_PAGE, ge=1, le=MAX_K,
        description=f"At most this many passages of one page (default {DEFAULT_PER_PAGE}; null: no limit), so an "
                    "answer cites several pages.")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("the query is blank")
        return text

    @model_validator(mode="after")
    def _alias_or_snapshot(self) -> "SearchRequest":
        if self.alias is not None and self.snapshot is not None:
            raise ValueError("give an alias or a snapshot id, not both")
        return self


class SearchResponse(BaseModel):
    query: str
    site: str
    mode: str
    alias: str | None = Field(description="The alias read; null when a snapshot was pinned.")
    snapshot_id: int
    embedding_model: str
    results: list[Passage]


class ExplainResponse(BaseModel):
    query: str
    site: str
    mode: str
    alias: str | None = Field(description="The alias read; null when a snapshot was pinned.")
    snapshot_id: int
    embedding_model: str
    results: list[explaining.Explained] = Field(
        description="The passages of POST /v1/search, each with page, extraction, chunking, embedding, snapshot, "
                    "quality, correction and history: what a frontend shows as 'why this answer'.")


class PagesRequest(_Question):
    k: int = Field(default=5, ge=1, le=MAX_PAGES, description="How many pages.")
    passages: int = Field(default=DEFAULT_PAGE_PASSAGES, ge=1, le=MAX_PAGE_PASSAGES,
                          description="How many of each page's best passages.")


class PagesResponse(BaseModel):
    query: str
    site: str
    mode: str
    alias: str | None = Field(description="The alias read; null when a snapshot was pinned.")
    snapshot_id: int
    embedding_model: str
    pages: list[Page]


class SnapshotInfo(BaseModel):
    snapshot_id: int
    site: str
    state: str
    aliases: list[str]
    embedding_provider: str
    embedding_model: str
    dimensions: int
    chunks: int | None
    documents: int | None
    config_hash: str
    extractor_version: str
    chunker_version: str
    pinned: bool
    created_at: datetime
    built_at: datetime | None
    embedding_base_url: str | None = Field(
        None, description="OpenAI-compatible server that embedded the snapshot; queries go there too")
    embedding_api_key_env: str | None = Field(None, description="name of the variable holding that server's key")


class Problem(BaseModel):
    detail: str


ERRORS = {400: {"model": Problem}, 401: {"model": Problem}, 404: {"model": Problem},
          422: {"description": "Invalid request"}, 503: {"model": Problem}}


# -- dependencies -----------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")


def require_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                x_api_key: str | None = Depends(_header_key)) -> None:
    """With API keys configured, the request must carry one of them."""
    keys = request.app.state.api_keys
    if not keys:
        return
    given = x_api_key or (credentials.credentials if credentials else None)
    if given is None:
        raise HTTPException(401, "this API needs a key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise HTTPException(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})


def connection(request: Request) -> Iterator[psycopg.Connection]:
    """A pooled connection for the length of a request."""
    try:
        with request.app.state.pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise HTTPException(503, "the database is not reachable; see GET /readyz") from None


PooledConnection = Annotated[psycopg.Connection, Depends(connection)]
router = APIRouter()
protected = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=ERRORS)


# -- routes -----------------------------------------------------------------

@lru_cache(maxsize=1)
def _search_page() -> tuple[str, str]:
    """The search page and its Content-Security-Policy, which allows its own inline script and style by hash."""
    html = resources.files("sitekb").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    policy = (f"default-src 'none'; script-src 'self' {hashes('script')}; style-src 'self' {hashes('style')}; "
              "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return html, policy


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def page() -> HTMLResponse:
    """The search page for people."""
    html, policy = _search_page()
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": policy})


@router.get("/healthz", tags=["health"], summary="The process is up")
def healthz() -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", tags=["health"], summary="The database answers and has this version's schema",
            responses={503: {"model": Problem}})
def readyz(request: Request):
    expected = latest_version()
    try:
        with request.app.state.pool.connection(timeout=3) as conn:
            version = query.schema_version(conn)
    except (PoolTimeout, psycopg.Error) as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {redact(str(exc).strip())[:300]}"}, 503)
    if version is None or version < expected:
        return JSONResponse({"status": "unavailable", "schema_version": version, "expected": expected,
                             "detail": "the database is not migrated: run `sitekb db migrate`"}, 503)
    return {"status": "ready", "schema_version": version, "expected": expected}


@protected.get("/snapshots", response_model=list[SnapshotInfo], tags=["snapshots"],
               summary="Snapshots a frontend may query, newest first")
def list_snapshots(conn: PooledConnection, site: Annotated[Text | None, Query(pattern=SITE_PATTERN)] = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 50):
    return query.published(conn, site=site, limit=limit)


@protected.get("/snapshots/{snapshot_id}", response_model=SnapshotInfo, tags=["snapshots"],
               summary="One snapshot a frontend may query")
def get_snapshot(snapshot_id: Annotated[BigInt, Path()], conn: PooledConnection):
    rows = query.published(conn, snapshot_id=snapshot_id, limit=1)
    if not rows:
        raise HTTPException(404, f"snapshot {snapshot_id} is not available: it does not exist, was never "
                                 "published, or retention dropped it")
    return rows[0]


@protected.post("/search", response_model=SearchResponse, tags=["search"],
                summary="Top-k passages with citations for a question")
def search(body: SearchRequest, request: Request) -> SearchResponse:
    lend, asked = _searching(body, request)
    return SearchResponse(**query.search(lend, request.app.state.settings, body.query, **asked).as_dict())


@protected.post("/pages", response_model=PagesResponse, tags=["search"],
                summary="Top-k pages for a question, each with its best passages")
def search_pages(body: PagesRequest, request: Request) -> PagesResponse:
    lend = request.app.state.pool.connection
    alias, site = _alias_and_site(body, lend)
    result = query.search_pages(lend, request.app.state.settings, body.query, site=site, k=body.k, mode=body.mode,
                                alias=alias, snapshot_id=body.snapshot, filters=body.filters.to_query(),
                                passages=body.passages, ranking=body.ranking(),
                                cache=request.app.state.question_cache)
    return PagesResponse(**result.as_dict())


@protected.post("/explain", response_model=ExplainResponse, tags=["search"],
                summary="The passages of a search, each with where it came from and why it is trusted")
def explain(body: SearchRequest, request: Request) -> ExplainResponse:
    lend, asked = _searching(body, request)
    return ExplainResponse(**explaining.explain(lend, request.app.state.settings, body.query, **asked).as_dict())


def _searching(body: SearchRequest, request: Request) -> tuple:
    """The connection lender and the keyword arguments of query.search (and explain.explain, which searches
    the same way) for a request.

    No connection for the length of the request: the search borrows one to resolve the snapshot and one
    to rank, and holds none while the question is embedded.
    """
    lend = request.app.state.pool.connection
    alias, site = _alias_and_site(body, lend)
    return lend, {"site": site, "k": body.k, "mode": body.mode, "alias": alias, "snapshot_id": body.snapshot,
                  "filters": body.filters.to_query(), "ranking": body.ranking(body.per_page),
                  "cache": request.app.state.question_cache}


def _alias_and_site(body: _Question, lend) -> tuple[str | None, str | None]:
    """The alias a request reads (none when it pins a snapshot) and its site: a pinned snapshot names
    its own; otherwise the only published site may be implied."""
    alias = None if body.snapshot else (body.alias or DEFAULT_ALIAS)
    site = body.site
    if site is None and not body.snapshot:
        with lend() as conn:
            site = query.only_site(conn, alias)
    return alias, site


# -- errors -----------------------------------------------------------------

def _problem(status: int):
    def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status)
    return handler


def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # A lost connection (OperationalError) or none to be had in time (PoolTimeout).
    return JSONResponse({"detail": "the database is not reachable; see GET /readyz"}, 503)


def _embedding_down(request: Request, exc: Exception) -> JSONResponse:
    # The full reason names the embedding server, whose URL may carry credentials: it goes to
    # the log only (redacted), and an unauthenticated client learns just what it can do about it.
    log.warning("search answered 503: %s", redact(str(exc)))
    return JSONResponse({"detail": "the question cannot be embedded now (the embedding server is down or "
                                   "refuses); retry later"}, 503, headers={"Retry-After": "5"})


def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes each bad input back; a lone surrogate cannot be encoded in the
    # answer (a 500) and echoing is of no use to the caller, so only where and why are sent.
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, 422)


# -- headers every response carries -----------------------------------------

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def _host_of(header: str) -> str:
    """The host name of a Host header, lower case, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    """ASGI middleware: refuse a Host that is not allowed (DNS rebinding) and set CSP and nosniff.

    Allowed: the loopback names, the address the server is bound to, and ``allowed_hosts``
    (``*`` allows any). A rebinding page sends its own name as Host, so it is refused.
    """

    def __init__(self, app, allowed_hosts: Sequence[str] = ()):
        self.app = app
        self.allowed = {_host_of(h) for h in allowed_hosts if h.strip()}
        self.any_host = "*" in self.allowed

    def _allowed(self, scope) -> bool:
        if self.any_host:
            return True
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        name = _host_of(host)
        if name in self.allowed:
            return True
        bound = (scope.get("server") or ("",))[0] or ""
        return name in LOCAL_HOSTS or (bool(name) and name == _host_of(f"[{bound}]" if ":" in bound else bound))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", API_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        if not self._allowed(scope):
            refused = JSONResponse({"detail": "this Host is not served here; add it to SITEKB_ALLOWED_HOSTS"}, 400)
            return await refused(scope, receive, with_headers)
        await self.app(scope, receive, with_headers)


# -- the app ----------------------------------------------------------------

def create_app(settings: Settings, *, database_url: str | None = None, api_keys: Sequence[str] | None = None,
               pool_size: int = 4, allowed_hosts: Sequence[str] | None = None,
               question_cache_size: int = 1024) -> FastAPI:
    """The API app over ``database_url`` (default: ``settings.api_database_url``, else the usual database).

    ``allowed_hosts`` (default ``settings.allowed_hosts``): the Host names served; none given,
    the bound address and the loopback names. ``question_cache_size``: how many question
    vectors are kept (least recently asked go first).
    """
    url = database_url or settings.api_database_url or store.database_url(settings)
    # check: a connection is tried (an empty statement) before it is lent; one the server dropped
    # (a restart, a failover, an idle timeout) is replaced instead of failing the request.
    pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, kwargs={"autocommit": True},
                          configure=register_vector, check=ConnectionPool.check_connection, timeout=10)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Not waiting: the server starts even while the database is down, and /readyz says so.
        pool.open(wait=False)
        yield
        pool.close()

    app = FastAPI(
        title="sitekb query API", version=__version__, lifespan=lifespan,
        description="Top-k passages with citations from published knowledge snapshots. "
                    "The same search is available over SQL as sitekb_api.search.",
        # The interactive docs pull scripts from a CDN; the spec itself is served.
        docs_url=None, redoc_url=None,
    )
    app.state.pool = pool
    app.state.settings = settings
    app.state.question_cache = query.QuestionCache(question_cache_size)
    # A blank key (`--api-key ""`) would let an empty X-API-Key header in: blanks are dropped.
    app.state.api_keys = [k.strip() for k in (settings.api_keys if api_keys is None else api_keys)
                          if k and k.strip()]
    app.include_router(router)
    app.include_router(protected)
    from sitekb.report_html.routes import router as report_router   # GET /report/{site}: the HTML report

    app.include_router(report_router, dependencies=[Depends(require_key)], responses=ERRORS)
    app.add_exception_handler(NotFound, _problem(404))
    app.add_exception_handler(ConfigError, _problem(422))
    app.add_exception_handler(EmbeddingUnavailable, _embedding_down)
    app.add_exception_handler(TransientError, _embedding_down)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _database_down)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(SecurityHeaders,
                       allowed_hosts=tuple(settings.allowed_hosts if allowed_hosts is None else allowed_hosts))
    return app


__all__ = ["create_app", "SearchRequest", "SearchResponse", "SnapshotInfo"]
