"""Task bodies of the sitekb DAGs, a few lines each over :mod:`sitekb.pipeline`.

XCom carries the run id and small counts only; pages, chunks and vectors move
through Postgres. A :class:`sitekb.errors.SitekbError` (bad config, quality
gate, budget) fails the task without retry and with its message; anything
else (lost connection, HTTP 429 after the client's own retries) is left to
Airflow's retries.

Settings read: everything :class:`sitekb.settings.Settings` reads, the
Airflow connection ``sitekb_db`` (a Postgres URI) when SITEKB_DATABASE_URL is
unset, and, for a site embedding with provider ``openai`` when OPENAI_API_KEY
is unset, the Airflow connection ``sitekb_openai``: password = API key, host =
base URL of an OpenAI-compatible server (a full URL, or host + port + schema as
the path; extra ``{"base_url": ...}`` also works; empty = OpenAI itself).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

from sitekb import db, pipeline
from sitekb.errors import SitekbError
from sitekb.settings import Settings

# One event per published snapshot; `extra` names the site, alias and snapshot id.
SNAPSHOT_PUBLISHED = Asset(uri="sitekb://snapshots/published", name="sitekb_snapshot_published")
DB_CONNECTION_ID = "sitekb_db"
OPENAI_CONNECTION_ID = "sitekb_openai"


def _settings() -> Settings:
    settings = Settings.from_env()
    if settings.database_url or os.environ.get(f"AIRFLOW_CONN_{DB_CONNECTION_ID.upper()}") is None:
        return settings
    from airflow.sdk import Connection

    uri = Connection.get(DB_CONNECTION_ID).get_uri().replace("postgres://", "postgresql://", 1)
    return Settings.from_env(database_url=uri)


def openai_base_url(conn) -> str | None:
    """The base URL an Airflow connection names: extra base_url, a URL in host, or host/port/schema."""
    extra = conn.extra_dejson or {}
    if extra.get("base_url"):
        return str(extra["base_url"])
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.strip('/')}" if conn.schema else ""
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{host}{port}{path}"


def export_openai_connection() -> bool:
    """Put the ``sitekb_openai`` connection's key and base URL in this task's environment.

    The environment, not just this task's Settings, because every embedder of the
    task reads it: the embed stage's and the one search uses for golden questions.
    Variables already set win. Returns whether the connection exists.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(OPENAI_CONNECTION_ID)
    except AirflowNotFoundException:
        return False
    if conn.password:
        os.environ.setdefault("OPENAI_API_KEY", conn.password)
    base_url = openai_base_url(conn)
    if base_url:
        os.environ.setdefault("OPENAI_BASE_URL", base_url)
    return True


@contextmanager
def _terminal_errors() -> Iterator[None]:
    try:
        yield
    except SitekbError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def _small(result: dict) -> dict:
    """What goes to XCom: scalar counts only."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}


def start(params: dict, dag_run_id: str) -> str:
    """Resolve the site config and record the run; return its id."""
    settings = _settings()
    with _terminal_errors():
        config = pipeline.resolve_site(params["site"], settings, start_url=params.get("start_url") or None)
        run_id = f"{config.name}__{dag_run_id}"
        with db.connection(db.database_url(settings)) as conn:
            db.migrate(conn)
            pipeline.start_run(conn, config, run_id, {
                "alias": params.get("alias") or "production",
                "full_recrawl": bool(params.get("full_recrawl")),
                "actor": f"airflow:{dag_run_id}",
            })
    return run_id


def run_stage(name: str, run_id: str) -> dict:
    """Run one pipeline stage of ``run_id``; return its counts."""
    settings = _settings()
    url = db.database_url(settings)
    calls = {
        "crawl": lambda conn, run: pipeline.crawl_stage(conn, run, url),
        "extract": pipeline.extract_stage,
        "validate": pipeline.validate_stage,
        "chunk": lambda conn, run: pipeline.chunk_stage(conn, run, settings),
        "embed": lambda conn, run: pipeline.embed_stage(conn, run, settings),
        "build": lambda conn, run: pipeline.build_stage(conn, run, settings),
        "evaluate": pipeline.evaluate_stage,
        "publish": pipeline.publish_stage,
    }
    with _terminal_errors(), db.connection(url) as conn:
        run = pipeline.load_run(conn, run_id)
        if (run.site.embedding.provider == "openai" and name in ("embed", "evaluate")
                and not os.environ.get("OPENAI_API_KEY") and export_openai_connection()):
            settings = Settings.from_env(database_url=settings.database_url)  # the stages' lambdas see this one
        try:
            return _small(calls[name](conn, run))
        except SitekbError as exc:
            pipeline.fail_run(conn, run_id, exc)
            raise


def publish(run_id: str, outlet_events) -> dict:
    """Move the alias and tell downstream consumers through the Asset event."""
    result = run_stage("publish", run_id)
    outlet_events[SNAPSHOT_PUBLISHED].extra = {
        "site": run_id.split("__", 1)[0],
        "alias": result.get("alias"),
        "snapshot_id": result.get("snapshot_id"),
        "previous": result.get("previous"),
    }
    return result
