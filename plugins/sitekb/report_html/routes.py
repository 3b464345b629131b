"""``GET /report/{site}``: the site's HTML report (:func:`sitekb.report_html.page.render`) from `sitekb serve`.

``?run=RUN_ID`` puts that run in focus. The page carries its own
Content-Security-Policy (its one inline style by hash; no script, nothing
fetched). With API keys configured, the app includes this router behind the
same key check as ``/v1`` (``Authorization: Bearer KEY`` or ``X-API-Key``).

The report reads sitekb's own tables (runs, snapshots, spend), not only the
``sitekb_api`` schema: a server that connects as the read-only
``sitekb_reader`` role answers 503 saying so, and `sitekb report SITE` (run as
the owner) writes the same page to a file.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse

from sitekb.report_html import page

SITE = r"^[a-z0-9][a-z0-9_-]{0,62}$"   # sitekb.sites.SITE_NAME

router = APIRouter(tags=["report"])


@router.get("/report/{site}", response_class=HTMLResponse, summary="The site's HTML report (charts, verdicts)",
            responses={404: {"description": "No such site or run"},
                       503: {"description": "The server's database role may not read the report's tables"}})
def site_report(request: Request, site: Annotated[str, Path(pattern=SITE)],
                run: Annotated[str | None, Query(max_length=200, description="put this run in focus")] = None
                ) -> HTMLResponse:
    if run is not None and "\x00" in run:
        raise HTTPException(422, "run may not contain a NUL character")
    try:
        with request.app.state.pool.connection() as conn:
            html = page.render(conn, site, run_id=run, data_docs=False)
    except psycopg.errors.InsufficientPrivilege:
        raise HTTPException(503, "this server reads the database as a role that may not read sitekb's run records "
                                 "(e.g. sitekb_reader): serve with the owner's SITEKB_DATABASE_URL, or write the "
                                 f"report to a file with `sitekb report {site}`") from None
    return HTMLResponse(html, headers={"Content-Security-Policy": page.content_security_policy(),
                                       "Cache-Control": "no-cache"})
