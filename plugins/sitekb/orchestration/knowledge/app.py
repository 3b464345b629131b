"""The Knowledge view: a FastAPI app that the sitekb plugin mounts in Airflow's API server at ``/sitekb``.

Endpoints (relative to the mount):

- ``GET /``: the page (plain HTML, JS and CSS from ``static/``; no external assets);
- ``GET /api/me``: who is asking;
- ``GET /api/sites``: the sites the user may read, with their aliases and newest run;
- ``GET /api/sites/{site}``: aliases and what they point to, the snapshot history
  with quality summary and golden score, the alias moves, and whether the
  user may roll back;
- ``GET /api/sites/{site}/snapshots/{id}/held-back``: the quarantine and the
  exclusions of that snapshot's run (the page asks for the live one);
- ``GET /api/sites/{site}/diff?from=A&to=B``: pages added, removed and changed;
- ``GET /report/{site}?run=RUN_ID``: the site's HTML report (charts of its
  snapshots, funnel, coverage and spend; each run's verdict in plain words:
  :mod:`sitekb.report_html`), linked from the page;
- ``POST /api/sites/{site}/aliases/{alias}/rollback`` (JSON ``{"reason": ...}``):
  moves the alias back through :func:`sitekb.store.snapshots.rollback`, with
  the Airflow user as the actor in the alias audit log.

Who is asking is Airflow's business: the user of the request's token
(``Authorization: Bearer``, or the ``_token`` cookie the Airflow UI sets),
resolved by Airflow's own ``get_user``. What they may do is the auth
manager's: reading a site needs GET on its DAG ``sitekb_<site>``, a rollback
needs the right to trigger it (POST on the DAG's runs), exactly as for
triggering it in the UI.

Settings read: :func:`sitekb.orchestration.settings.task_settings` (the
environment, then the ``sitekb_db`` connection), on the first request that
needs the database; the embedded server is used only if it is running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sitekb import store
from sitekb.errors import DatabaseUnavailable, NotFound, SitekbError
from sitekb.orchestration.naming import dag_id
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings
from sitekb.store import knowledge, snapshot_tables, snapshots

log = logging.getLogger(__name__)

SITE = r"^[a-z0-9][a-z0-9_-]{0,62}$"   # sitekb.sites.SITE_NAME
ALIAS = r"^[^/]{1,63}$"
STATIC = resources.files("sitekb.orchestration.knowledge").joinpath("static")
STATIC_FILES = {"knowledge.js": "text/javascript", "knowledge.css": "text/css", "icon.svg": "image/svg+xml"}
# The page runs only its own script and style, and only Airflow may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "same-origin",
}
ROLLBACK_REASON = "rollback in the Airflow Knowledge view"
DIFF_PAGES = 200   # pages listed per kind in a diff


# -- payloads ---------------------------------------------------------------

class Me(BaseModel):
    name: str
    default_alias: str = DEFAULT_ALIAS


class SiteSummary(BaseModel):
    site: str
    dag_id: str
    snapshots: int
    newest_snapshot: int | None
    aliases: dict[str, int] = Field(description="alias -> the snapshot id it points to")
    last_run_id: str | None
    last_run_status: str | None
    last_run_started_at: datetime | None
    last_run_finished_at: datetime | None


class AliasInfo(BaseModel):
    alias: str
    snapshot_id: int
    state: str
    updated_at: datetime
    snapshot_created_at: datetime
    golden: dict | None
    from_snapshot: int | None = Field(description="where the move that set the alias came from")
    actor: str | None
    reason: str | None
    moved_at: datetime | None
    rollback_to: int | None = Field(default=None, description="the snapshot a rollback would move the alias to")


class SnapshotRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    snapshot_id: int
    state: str
    run_id: str
    created_at: datetime
    built_at: datetime | None
    pinned: bool
    has_table: bool = Field(description="false once retention dropped its chunks (it can no longer be compared)")
    embedding_model: str
    dimensions: int
    counts: dict
    quality: dict = Field(description="golden, documents, failures and totals of its evaluation")
    reasons: list
    diff: dict = Field(description="page counts per kind against the snapshot live when it was evaluated")
    aliases: list[str]


class AliasMove(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    alias: str
    from_snapshot: int | None
    to_snapshot: int
    actor: str
    reason: str
    decision: str = "moved"
    moved_at: datetime


class SiteDetail(BaseModel):
    site: str
    dag_id: str
    can_rollback: bool = Field(description="the user may trigger the site's DAG, and so roll its aliases back")
    live_snapshot: int | None = Field(description=f"what {DEFAULT_ALIAS} points to")
    aliases: list[AliasInfo]
    snapshots: list[SnapshotRow]
    moves: list[AliasMove]


class HeldBack(BaseModel):
    site: str
    snapshot_id: int
    run_id: str
    quarantine: dict = Field(description="quarantined documents and those an approval let through")
    exclusions: dict = Field(description="URLs the crawl left out: counts per rule and the rows")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="why, for the alias audit log")


class RollbackResult(BaseModel):
    site: str
    alias: str
    from_snapshot: int
    to_snapshot: int
    actor: str
    reason: str


# -- who is asking, and what they may do ------------------------------------

async def current_user(request: Request) -> Any:
    """The Airflow user of the request's bearer token or UI cookie (401/403 from Airflow's ``get_user``)."""
    # Imported here: the plugin module is loaded by every Airflow process, the API server's security
    # module only belongs in the API server.
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


class Access:
    """What one user may do with sites, as Airflow's auth manager decides (on the site's DAG)."""

    def __init__(self, manager: Any, user: Any):
        self.manager, self.user = manager, user

    @property
    def name(self) -> str:
        return self.user.get_name()

    def may_read(self, site: str) -> bool:
        return self.manager.is_authorized_dag(method="GET", details=_dag_details(dag_id(site)), user=self.user)

    def may_rollback(self, site: str) -> bool:
        """The right to trigger the site's DAG: POST on its runs."""
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        return self.manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                              details=_dag_details(dag_id(site)), user=self.user)


def _dag_details(dag: str):
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.configuration import conf

    team = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag)
    return DagDetails(id=dag, team_name=team)


def access(request: Request, user: Annotated[Any, Depends(current_user)]) -> Access:
    manager = request.app.state.auth_manager
    if manager is None:
        from airflow.api_fastapi.app import get_auth_manager

        manager = get_auth_manager()
    return Access(manager, user)


def database(request: Request) -> Iterator[psycopg.Connection]:
    """A connection to the sitekb database for the length of a request."""
    state = request.app.state
    if state.database_url is None:
        state.database_url = store.database_url(state.settings(), start_embedded=False)
    with store.connection(state.database_url) as conn:
        yield conn


User = Annotated[Access, Depends(access)]
Database = Annotated[psycopg.Connection, Depends(database)]
SiteName = Annotated[str, Path(pattern=SITE)]


def json_only(request: Request) -> None:
    """A change must come as JSON: another origin cannot send that without a CORS preflight, which this
    app never grants, so a page elsewhere cannot ride on the Airflow session cookie."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the request body as JSON (Content-Type: application/json)")


def readable(user: Access, site: str) -> None:
    if not user.may_read(site):
        raise HTTPException(403, f"{user.name} may not read the DAG {dag_id(site)}, so not its knowledge either")


# -- routes -----------------------------------------------------------------

router = APIRouter()
api = APIRouter(prefix="/api")


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse(STATIC.joinpath("index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
def static(name: str):
    if name not in STATIC_FILES:
        raise HTTPException(404, "no such file")
    return Response(STATIC.joinpath(name).read_bytes(), media_type=STATIC_FILES[name], headers=PAGE_HEADERS)


@router.get("/report/{site}", include_in_schema=False, response_class=HTMLResponse)
def site_report(site: SiteName, user: User, conn: Database,
                run: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None) -> HTMLResponse:
    """The site's HTML report: inline SVG and its own style only, so its policy allows that style by hash."""
    from sitekb.report_html import page as report_page

    readable(user, site)
    html = report_page.render(conn, site, run_id=run, data_docs=False)
    return HTMLResponse(html, headers={**PAGE_HEADERS,
                                       "Content-Security-Policy": report_page.content_security_policy("'self'")})


@api.get("/me", response_model=Me)
def me(user: User) -> Me:
    return Me(name=user.name)


@api.get("/sites", response_model=list[SiteSummary])
def list_sites(user: User, conn: Database) -> list[SiteSummary]:
    return [SiteSummary(**row, dag_id=dag_id(row["site"])) for row in knowledge.sites(conn)
            if user.may_read(row["site"])]


@api.get("/sites/{site}", response_model=SiteDetail)
def site_detail(site: SiteName, user: User, conn: Database,
                limit: Annotated[int, Query(ge=1, le=500)] = 50) -> SiteDetail:
    readable(user, site)
    history = knowledge.snapshot_history(conn, site, limit=limit)
    aliases = [{**a, "rollback_to": snapshots.rollback_target(conn, site, a["alias"])}
               for a in knowledge.aliases(conn, site)]
    if not history and not aliases:
        raise HTTPException(404, f"site {site!r} has no snapshot yet; its DAG {dag_id(site)} builds the first")
    return SiteDetail(site=site, dag_id=dag_id(site), can_rollback=user.may_rollback(site),
                      live_snapshot=next((a["snapshot_id"] for a in aliases if a["alias"] == DEFAULT_ALIAS), None),
                      aliases=aliases, snapshots=history, moves=snapshots.history(conn, site, limit=limit))


@api.get("/sites/{site}/snapshots/{snapshot_id}/held-back", response_model=HeldBack)
def held_back(site: SiteName, snapshot_id: int, user: User, conn: Database,
              limit: Annotated[int, Query(ge=1, le=2000)] = 200) -> HeldBack:
    readable(user, site)
    snap = _snapshot_of(conn, site, snapshot_id)
    return HeldBack(site=site, snapshot_id=snap.snapshot_id, run_id=snap.run_id,
                    quarantine=knowledge.held_back(conn, snap.run_id, limit=limit),
                    exclusions=knowledge.run_exclusions(conn, snap.run_id, limit=limit))


@api.get("/sites/{site}/diff")
def diff(site: SiteName, user: User, conn: Database,
         old: Annotated[int, Query(alias="from", ge=1)], new: Annotated[int, Query(alias="to", ge=1)]) -> dict:
    """What changed from snapshot ``from`` to ``to`` (both of the site, both still with their tables)."""
    readable(user, site)
    result = snapshot_tables.diff(conn, _snapshot_of(conn, site, old), _snapshot_of(conn, site, new)).as_dict()
    # Totals stay whole; the page lists at most DIFF_PAGES pages of each kind.
    for kind in ("added", "removed", "changed"):
        result[f"{kind}_total"] = len(result[kind])
        result[kind] = result[kind][:DIFF_PAGES]
    return result


@api.post("/sites/{site}/aliases/{alias}/rollback", response_model=RollbackResult,
          dependencies=[Depends(json_only)])
def rollback(site: SiteName, alias: Annotated[str, Path(pattern=ALIAS)], body: RollbackRequest,
             user: User, conn: Database) -> RollbackResult:
    """Move the alias back to the snapshot it pointed to before; the Airflow user is the actor."""
    if not user.may_rollback(site):
        raise HTTPException(403, f"{user.name} may not trigger the DAG {dag_id(site)}, so may not roll back "
                                 f"its aliases")
    if knowledge.alias_target(conn, site, alias) is None:
        raise HTTPException(404, f"site {site!r} has no alias {alias!r}")
    reason = f"{ROLLBACK_REASON}: {body.reason.strip()}" if body.reason.strip() else ROLLBACK_REASON
    try:
        old, new = snapshots.rollback(conn, site, alias, actor=user.name, reason=reason)
    except SitekbError as exc:   # no earlier snapshot, or its table is gone
        raise HTTPException(409, str(exc)) from None
    log.info("%s rolled back %s/%s: snapshot %s -> %s (%s)", user.name, site, alias, old, new, reason)
    return RollbackResult(site=site, alias=alias, from_snapshot=old, to_snapshot=new, actor=user.name,
                          reason=reason)


def _snapshot_of(conn: psycopg.Connection, site: str, snapshot_id: int) -> snapshots.Snapshot:
    snap = snapshots.get(conn, snapshot_id)
    if snap.site != site:
        raise NotFound(f"snapshot {snapshot_id} is of site {snap.site!r}, not {site!r}")
    return snap


# -- errors -----------------------------------------------------------------

def _problem(status: int):
    def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status)
    return handler


def _not_migrated(request: Request, exc: psycopg.errors.UndefinedTable) -> JSONResponse:
    return JSONResponse({"detail": "the sitekb database has no sitekb schema yet: a site DAG's first run "
                                   "(or `sitekb db migrate`) creates it"}, 503)


def _database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
    return JSONResponse({"detail": "the sitekb database is not reachable: check SITEKB_DATABASE_URL or the "
                                   "Airflow connection sitekb_db"}, 503)


# -- the app ----------------------------------------------------------------

def create_app(*, settings: Callable[[], Settings] | None = None, database_url: str | None = None,
               auth_manager: Any = None) -> FastAPI:
    """The Knowledge app. Inside Airflow every argument is left out: settings come from
    :func:`~sitekb.orchestration.settings.task_settings` on first use and the auth manager is
    Airflow's; a test passes a database URL and an auth manager."""
    if settings is None:
        def settings() -> Settings:
            from sitekb.orchestration.settings import task_settings

            return task_settings()

    app = FastAPI(title="sitekb Knowledge view", docs_url=None, redoc_url=None,
                  description="Sites, aliases, snapshot history, diffs, quarantine and exclusions of sitekb, "
                              "and the rollback of an alias, for Airflow users.")
    app.state.settings = settings
    app.state.database_url = database_url
    app.state.auth_manager = auth_manager
    app.include_router(router)
    app.include_router(api)
    app.add_exception_handler(NotFound, _problem(404))
    app.add_exception_handler(DatabaseUnavailable, _problem(503))
    app.add_exception_handler(psycopg.errors.UndefinedTable, _not_migrated)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    return app
