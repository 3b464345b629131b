"""
### sitekb_refresh

Crawls one site, checks content quality, chunks and embeds the text, builds a
new immutable snapshot in Postgres + pgvector and publishes it to an alias
(`production` by default) if it passes the quality gate and the golden
questions. A blocked run leaves the live snapshot untouched; its reasons are in
the failed task's log and in `sitekb snapshots list`.

**Params**: `site` (a name under `dags/sites/` or a YAML path), `start_url`
(serve the site from another origin, e.g. the demo on a free port), `alias`,
`full_recrawl` (ignore ETag/Last-Modified and fetch everything again).

**Emits**: the Asset `sitekb://snapshots/published`, with `site`, `alias` and
`snapshot_id` in the event's extra.

Stages (one task each, from the registry `sitekb.stages.STAGES`): crawl →
extract → validate → chunk → embed → build → evaluate → publish. Every task
can run twice; XCom carries only the run id and counts; each task's log says
what its stage did.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from sitekb.orchestration import tasks
from sitekb.passages import DEFAULT_ALIAS
from sitekb.stages import STAGES

DEFAULT_ARGS = {
    "owner": "sitekb",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id="sitekb_refresh",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["sitekb", "ingestion"],
    doc_md=__doc__,
    params={
        "site": Param("demo", type="string", description="Site config name under dags/sites/ or a YAML path"),
        "start_url": Param(None, type=["null", "string"], description="Override the site's origin"),
        "alias": Param(DEFAULT_ALIAS, type="string", description="Alias to publish to"),
        "full_recrawl": Param(False, type="boolean", description="Fetch every page again"),
    },
)
def sitekb_refresh():
    @task
    def start(params=None, run_id=None) -> str:
        return tasks.start(params, run_id)

    run = start()
    previous = None
    for stage in STAGES:
        previous = tasks.stage_task(stage)(run, previous)


sitekb_refresh()
