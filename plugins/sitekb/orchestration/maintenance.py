"""The ``sitekb_maintenance`` DAG: compaction of the snapshot store, daily (no I/O at parse time)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from sitekb.orchestration import tasks
from sitekb.orchestration.dag_factory import START_DATE

DAG_ID = "sitekb_maintenance"
DOC = """
### sitekb maintenance

`compact`: for every site, the snapshot its aliases point to and its newest one are
compacted when due (deltas and tombstones above 20% of the base, or 8 deltas): one new
base segment with the same rows is loaded and indexed while searches read the old
segments, then the snapshot's views are swapped in one short transaction. Segments no
kept snapshot lists are dropped. Safe to run at any time, and again after a kill: an
interrupted compaction leaves nothing behind.
"""


def maintenance_dag() -> DAG:
    from airflow.sdk import task

    with DAG(
        dag_id=DAG_ID,
        description="compact each site's snapshot segments and drop the ones no snapshot lists",
        schedule="@daily",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "sitekb", "retries": 2, "retry_delay": timedelta(minutes=5)},
        tags=["maintenance", "sitekb"],
        doc_md=DOC,
    ) as dag:
        @task(task_id="compact", doc_md="compact the snapshots whose compaction is due; drop unlisted segments")
        def compact() -> list[dict]:
            return tasks.compact_due()

        compact()
    return dag
