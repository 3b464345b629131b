"""The HTTP query API and search page (`sitekb serve`): FastAPI over the SQL API.

Endpoints:

- ``POST /v1/search``: top-k passages with citations for a question, from a
  site's alias (default ``production``) or a pinned snapshot; vector, keyword
  or hybrid; optional filters. The question is embedded with the model that
  embedded the snapshot, then ranked by ``sitekb_api.search``, the same
  function a frontend calls over SQL, so both answer alike.
- ``GET /v1/snapshots`` and ``GET /v1/snapshots/{id}``: the snapshots a
  frontend may query (published, or published before and not yet retired).
- ``GET /healthz`` (the process answers), ``GET /readyz`` (the database
  answers and is migrated to this version's schema).
- ``GET /openapi.json``: the OpenAPI spec; ``GET /``: a search page for people.

Everything reads through ``sitekb_api`` only, so the server may connect as the
read-only ``sitekb_reader`` role. API keys are optional: with none configured
the API is open (it binds to 127.0.0.1 by default); with keys, every ``/v1``
call needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

Settings read: ``SITEKB_API_KEYS`` (comma-separated keys, plus ``--api-key``),
``SITEKB_API_DATABASE_URL`` (optional: e.g. a URL of the sitekb_reader role;
default the database URL every command uses).
"""

from __future__ import annotations

import hmac
import os
from contextlib import asynccontextmanager
from datetime import date, datetime
from importlib import resources
from typing import Annotated, Literal

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sitekb import __version__
from sitekb.errors import SitekbError
from sitekb.search import DEFAULT_MODE, MAX_K, MAX_QUERY_CHARS, MODES, embed_query, snippet_of

SITE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def keys_from(cli_keys: list[str] | None = None) -> list[str]:
    """API keys from SITEKB_API_KEYS (comma-separated) plus the command line's."""
    keys = [k.strip() for k in os.environ.get("SITEKB_API_KEYS", "").split(",")]
    keys += [k.strip() for k in (cli_keys or [])]
    return [k for k in keys if k]


# -- payloads ---------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchFilters(_Strict):
    """Optional restrictions; every one given must hold."""

    url_prefix: str | None = Field(default=None, max_length=2000, description="Only URLs starting with this.")
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=20, description="Only pages with at least one of these tags.")
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
                                 description="Language code; 'en' also matches 'en-GB'.")
    published_after: date | None = Field(default=None, description="Published on or after (inclusive).")
    published_before: date | None = Field(default=None, description="Published on or before (inclusive).")

    @model_validator(mode="after")
    def _ordered_dates(self) -> "SearchFilters":
        if self.published_after and self.published_before and self.published_after > self.published_before:
            raise ValueError("published_after is later than published_before")
        return self


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The question, in plain words.")
    site: str | None = Field(default=None, pattern=SITE_PATTERN,
                             description="Site name; may be left out when only one site is published.")
    k: int = Field(default=5, ge=1, le=MAX_K, description="How many passages.")
    mode: Literal["vector", "keyword", "hybrid"] = Field(default=DEFAULT_MODE)
    alias: str | None = Field(default=None, min_length=1, max_length=63,
                              description="Alias to read (default production).")
    snapshot: int | None = Field(default=None, ge=1, description="Pin this snapshot id instead of an alias.")
    filters: SearchFilters = Field(default_factory=SearchFilters)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is blank")
        return query

    @model_validator(mode="after")
    def _alias_or_snapshot(self) -> "SearchRequest":
        if self.alias is not None and self.snapshot is not None:
            raise ValueError("give an alias or a snapshot id, not both")
        return self


class Passage(BaseModel):
    rank: int
    chunk_id: str
    url: str
    title: str | None
    heading_path: list[str]
    content: str
    snippet: str
    score: float
    language: str | None
    tags: list[str]
    published: str | None


class SearchResponse(BaseModel):
    query: str
    site: str
    mode: str
    alias: str | None = Field(description="The alias read; null when a snapshot was pinned.")
    snapshot_id: int
    embedding_model: str
    results: list[Passage]


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


# -- the app ----------------------------------------------------------------

def expected_schema_version() -> int:
    from sitekb import db

    return max(version for version, _, _ in db.migrations())


def create_app(database_url: str | None = None, *, api_keys: list[str] | None = None,
               pool_size: int = 4) -> FastAPI:
    """The API app. ``database_url`` defaults to SITEKB_API_DATABASE_URL, else the usual database URL."""
    url = database_url or os.environ.get("SITEKB_API_DATABASE_URL")
    if url is None:
        from sitekb import db

        url = db.database_url()
    pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, kwargs={"autocommit": True},
                          configure=register_vector, timeout=10)

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
    app.state.api_keys = list(api_keys or [])
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")

    def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                    x_api_key: str | None = Depends(header_key)) -> None:
        keys = app.state.api_keys
        if not keys:
            return
        given = x_api_key or (credentials.credentials if credentials else None)
        if given is None:
            raise HTTPException(401, "this API needs a key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
            raise HTTPException(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})

    def connection():
        try:
            with pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise HTTPException(503, "the database is not reachable; see GET /readyz") from None

    errors = {401: {"model": Problem}, 404: {"model": Problem}, 422: {"description": "Invalid request"},
              503: {"model": Problem}}

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def page() -> HTMLResponse:
        html = resources.files("sitekb").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"], summary="The database answers and has this version's schema",
             responses={503: {"model": Problem}})
    def readyz():
        expected = expected_schema_version()
        try:
            with pool.connection(timeout=3) as conn:
                version = conn.execute("SELECT sitekb_api.schema_version()").fetchone()[0]
        except (PoolTimeout, psycopg.Error) as exc:
            return JSONResponse({"status": "unavailable", "detail": f"database: {str(exc).strip()[:300]}"}, 503)
        if version is None or version < expected:
            return JSONResponse({"status": "unavailable", "schema_version": version, "expected": expected,
                                 "detail": "the database is not migrated: run `sitekb db migrate`"}, 503)
        return {"status": "ready", "schema_version": version, "expected": expected}

    @app.get("/v1/snapshots", response_model=list[SnapshotInfo], tags=["snapshots"], responses=errors,
             dependencies=[Depends(require_key)], summary="Snapshots a frontend may query, newest first")
    def list_snapshots(site: Annotated[str | None, Query(pattern=SITE_PATTERN)] = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 50,
                       conn: psycopg.Connection = Depends(connection)):
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """SELECT * FROM sitekb_api.snapshots WHERE %(site)s::text IS NULL OR site = %(site)s
                   ORDER BY snapshot_id DESC LIMIT %(limit)s""", {"site": site, "limit": limit},
            ).fetchall()

    @app.get("/v1/snapshots/{snapshot_id}", response_model=SnapshotInfo, tags=["snapshots"], responses=errors,
             dependencies=[Depends(require_key)], summary="One snapshot a frontend may query")
    def get_snapshot(snapshot_id: int, conn: psycopg.Connection = Depends(connection)):
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM sitekb_api.snapshots WHERE snapshot_id = %s", (snapshot_id,)).fetchone()
        if row is None:
            raise HTTPException(404, f"snapshot {snapshot_id} is not available: it does not exist, was never "
                                     "published, or retention dropped it")
        return row

    @app.post("/v1/search", response_model=SearchResponse, tags=["search"], responses=errors,
              dependencies=[Depends(require_key)], summary="Top-k passages with citations for a question")
    def search(body: SearchRequest, conn: psycopg.Connection = Depends(connection)):
        alias = None if body.snapshot else (body.alias or "production")
        # A pinned snapshot names its site; otherwise the only published site may be implied.
        site = body.site or (None if body.snapshot else _only_site(conn, alias))
        for attempt in range(2):
            snap = _resolve(conn, site, alias, body.snapshot)
            site = snap["site"]
            try:
                vector = None if body.mode == "keyword" else embed_query(
                    snap["embedding_provider"], snap["embedding_model"], snap["dimensions"], body.query,
                    base_url=snap["embedding_base_url"], api_key_env=snap["embedding_api_key_env"])
            except SitekbError as exc:
                raise HTTPException(503, f"cannot embed the query with {snap['embedding_model']}: {exc}") from exc
            f = body.filters
            try:
                with conn.cursor(row_factory=dict_row) as cur:
                    rows = cur.execute(
                        """SELECT * FROM sitekb_api.search(%s, query => %s, query_embedding => %s, k => %s,
                               mode => %s, snapshot_id => %s, url_prefix => %s, tags => %s, language => %s,
                               published_after => %s, published_before => %s)""",
                        (site, body.query, vector, body.k, body.mode, snap["snapshot_id"], f.url_prefix,
                         f.tags, f.language, f.published_after, f.published_before),
                    ).fetchall()
            except psycopg.errors.NoDataFound as exc:
                if attempt == 0 and body.snapshot is None:
                    continue  # retention dropped the aliased snapshot just after the alias moved: resolve again
                raise HTTPException(404, _message(exc)) from exc
            except psycopg.errors.InvalidParameterValue as exc:
                raise HTTPException(422, _message(exc)) from exc
            break
        results = [Passage(snippet=snippet_of(r["content"]), **{k: v for k, v in r.items() if k != "snapshot_id"})
                   for r in rows]
        return SearchResponse(query=body.query, site=site, mode=body.mode, alias=alias,
                              snapshot_id=snap["snapshot_id"], embedding_model=snap["embedding_model"],
                              results=results)

    @app.exception_handler(psycopg.OperationalError)
    def _database_down(request: Request, exc: psycopg.OperationalError):
        return JSONResponse({"detail": "the database is not reachable; see GET /readyz"}, 503)

    return app


def _resolve(conn: psycopg.Connection, site: str, alias: str | None, snapshot: int | None) -> dict:
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT * FROM sitekb_api.resolve_snapshot(%s, %s, %s)",
                               (site, alias, snapshot)).fetchone()
    except psycopg.errors.NoDataFound as exc:
        raise HTTPException(404, _message(exc)) from exc


def _only_site(conn: psycopg.Connection, alias: str) -> str:
    sites = [r[0] for r in conn.execute("SELECT DISTINCT site FROM sitekb_api.aliases WHERE alias = %s ORDER BY 1",
                                        (alias,))]
    if len(sites) == 1:
        return sites[0]
    if not sites:
        raise HTTPException(404, f"no site has a snapshot published as {alias!r} yet")
    raise HTTPException(422, f"several sites are published ({', '.join(sites)}): name one in 'site'")


def _message(exc: psycopg.Error) -> str:
    hint = exc.diag.message_hint
    return (exc.diag.message_primary or str(exc)) + (f" ({hint})" if hint else "")


__all__ = ["create_app", "keys_from", "SearchRequest", "SearchResponse", "SnapshotInfo", "MODES"]
