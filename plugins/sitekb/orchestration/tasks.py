"""Task bodies of the sitekb DAGs: one task per registered stage, each a few lines over the engine.

:func:`stage_task` turns a :class:`sitekb.stages.Stage` into an Airflow task
(its id, timeout and retry policy come from the registry), so the DAG file
wires the registry and holds no stage of its own. XCom carries the run id and
each stage's small counts only; pages, chunks and vectors move through
Postgres. A :class:`sitekb.errors.SitekbError` (bad config, quality gate,
budget) fails the task without retry and with its message, and marks the run
failed; anything else (lost connection, HTTP 429 after the client's own
retries) is left to Airflow's retries.

Settings read: :func:`sitekb.orchestration.settings.task_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from airflow.sdk import Asset, task
from airflow.sdk.exceptions import AirflowFailException

from sitekb import engine, store
from sitekb.errors import SitekbError
from sitekb.orchestration.settings import task_settings
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import PROCESS_ENVIRONMENT
from sitekb.sites import resolve_site
from sitekb.stages import Stage, get
from sitekb.store import runs

# One event per published snapshot; `extra` names the site, alias and snapshot id.
SNAPSHOT_PUBLISHED = Asset(uri="sitekb://snapshots/published", name="sitekb_snapshot_published")


def _prepare() -> None:
    # A task process is an entry point: the libraries sitekb loads read these.
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


@contextmanager
def _terminal_errors() -> Iterator[None]:
    try:
        yield
    except SitekbError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def start(params: dict, dag_run_id: str) -> str:
    """Resolve the site config, record the run and the embedder it chooses; return the run id."""
    _prepare()
    settings = task_settings()
    with _terminal_errors():
        config = resolve_site(params["site"], settings, start_url=params.get("start_url") or None)
        run_id = f"{config.name}__{dag_run_id}"
        with store.connection(store.database_url(settings)) as conn:
            store.migrate(conn)
            engine.start(conn, settings, config, run_id, {
                "alias": params.get("alias") or DEFAULT_ALIAS,
                "full_recrawl": bool(params.get("full_recrawl")),
                "actor": f"airflow:{dag_run_id}",
            })
    return run_id


def run_stage(name: str, run_id: str, outlet_events=None) -> dict:
    """Run one stage of ``run_id``; return its counts (what XCom carries)."""
    _prepare()
    settings = task_settings()
    url = store.database_url(settings)
    with _terminal_errors(), store.connection(url) as conn:
        ctx = engine.context(conn, settings, url, run_id)
        try:
            result = engine.execute(get(name), ctx)
        except SitekbError as exc:
            runs.fail(conn, run_id, exc)
            raise
    if outlet_events is not None:
        # The publish stage moved an alias: tell downstream consumers which snapshot is live.
        outlet_events[SNAPSHOT_PUBLISHED].extra = {
            "site": ctx.site.name, "alias": result.counts.get("alias"),
            "snapshot_id": result.counts.get("snapshot_id"), "previous": result.counts.get("previous"),
        }
    return result.counts


def stage_task(stage: Stage):
    """The Airflow task of one registered stage: takes the run id and the previous stage's counts."""
    options: dict = {"task_id": stage.name, "doc_md": stage.does}
    if stage.timeout_hours:
        options["execution_timeout"] = timedelta(hours=stage.timeout_hours)
    if not stage.retry:
        options["retries"] = 0
    if stage.name == "publish":
        options["outlets"] = [SNAPSHOT_PUBLISHED]

        @task(**options)
        def publish_body(run: str, previous: dict | None = None, *, outlet_events=None) -> dict:
            return run_stage(stage.name, run, outlet_events)

        return publish_body

    @task(**options)
    def body(run: str, previous: dict | None = None) -> dict:
        return run_stage(stage.name, run)

    return body
