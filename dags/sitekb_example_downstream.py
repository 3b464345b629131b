"""
### sitekb_example_downstream

An example of a DAG that follows a knowledge base: it runs whenever a publish
moves the demo site's `production` alias (the Asset `sitekb://demo/production`,
updated by the publish task of `sitekb_demo`), reads the new snapshot's id from
the Asset event's extra (`site`, `alias`, `snapshot_id`, `previous`, `run_id`)
and checks that snapshot through the store: what a frontend deploy, a cache
warm-up or an evaluation job would start from. Copy it and change the Asset
to follow your own site: `sitekb://<site>/<alias>`.
"""

import pendulum
from airflow.sdk import Asset, dag, task

from sitekb.orchestration.naming import asset_uri
from sitekb.passages import DEFAULT_ALIAS


@dag(
    dag_id="sitekb_example_downstream",
    schedule=Asset(asset_uri("demo", DEFAULT_ALIAS)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["sitekb", "example"],
    default_args={"owner": "sitekb", "retries": 1},
    doc_md=__doc__,
)
def sitekb_example_downstream():
    @task
    def new_snapshot(triggering_asset_events=None) -> list[dict]:
        from sitekb.orchestration import tasks

        extras = [event.extra for events in (triggering_asset_events or {}).values() for event in events]
        return [tasks.published_snapshot(extra) for extra in extras]

    new_snapshot()


sitekb_example_downstream()
