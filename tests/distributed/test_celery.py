"""A site's DAG on the CeleryExecutor: mapped embed tasks on two workers, the same snapshot as a local run.

Everything runs on 127.0.0.1 (see ``conftest.py`` and ``harness.py``): Redis
as the broker, Airflow's metadata and Celery's results in a Postgres database,
the API server, scheduler and DAG processor, and two Celery workers, each
naming itself in the task instances it runs. The test triggers ``sitekb_demo``
through the REST API on the demo site served by this process, with its
embedding cut into four mapped ``embed_shard`` tasks, and checks that:

- the DAG run succeeded, every task with it;
- the mapped embed shards ran on both workers (their task instances' ``hostname``);
- the snapshot the run published equals the one the local engine
  (``sitekb.engine.refresh``) builds from the same site file in another
  database: the same chunks (ids, URLs, texts, headings, titles, full-text
  vectors) and vectors equal within float noise.

While Airflow works, the local run goes on in this process (the two share the
machine's cores; the comparison waits for both).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sitekb import engine, store
from sitekb.settings import Settings
from sitekb.sites import resolve_site
from sitekb.store import snapshot_tables, snapshots
from tests.distributed.conftest import SHARDS, SITE
from tests.distributed.harness import WORKERS

pytestmark = [pytest.mark.slow, pytest.mark.db, pytest.mark.timeout(900)]

DAG_ID = f"sitekb_{SITE}"
# Vectors of one text from two processes (other batch mates, other thread timing) differ in float noise only.
VECTOR_TOLERANCE = 1e-4
COLUMNS = ("chunk_id", "url", "title", "heading_path", "seq", "content", "token_count", "language", "tags",
           "published", "tsv")


def snapshot_contents(url: str, site: str) -> tuple[snapshots.Snapshot, list[dict], np.ndarray]:
    """The production snapshot of ``site`` in the database at ``url``: its record, rows by chunk id, vectors."""
    from psycopg import sql
    from psycopg.rows import dict_row

    with store.connection(url) as conn:
        snap = snapshots.resolve(conn, site)
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(sql.SQL("SELECT {columns}, tsv::text AS tsv, embedding FROM {table} ORDER BY chunk_id")
                               .format(columns=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS[:-1]),
                                       table=snapshot_tables.qualified(snap.table_name))).fetchall()
    vectors = np.array([row.pop("embedding").to_numpy() for row in rows], dtype=np.float64)
    return snap, rows, vectors


@pytest.fixture(scope="module")
def runs(celery_airflow, demo_site, distributed_databases, distributed_sites_dir, tmp_path_factory):
    """Trigger the DAG on Celery, run the local engine meanwhile, wait for the DAG run: both results."""
    celery_airflow.wait_for_dag(DAG_ID)
    celery_airflow.unpause(DAG_ID)
    dag_run = celery_airflow.trigger(DAG_ID, {"start_url": demo_site.base_url},
                                     run_id=f"distributed__{int(time.time())}")
    started = time.monotonic()

    settings = Settings.from_env(database_url=distributed_databases["local"], sites_dir=distributed_sites_dir,
                                 home=tmp_path_factory.mktemp("sitekb-local"))
    site = resolve_site(str(distributed_sites_dir / f"{SITE}.yaml"), settings, start_url=demo_site.base_url)
    local_run = engine.refresh(settings, site, actor="test:local")
    local_seconds = time.monotonic() - started

    finished = celery_airflow.wait_for_run(DAG_ID, dag_run["dag_run_id"], timeout=600)
    tasks = celery_airflow.task_instances(DAG_ID, dag_run["dag_run_id"])
    shards = {t["map_index"]: t["hostname"] for t in tasks if t["task_id"] == "embed_shard"}
    print(f"\nlocal run {local_run}: {local_seconds:.0f}s after the trigger; "
          f"DAG run {finished['state']} after {time.monotonic() - started:.0f}s; embed_shard ran on {shards}")
    return {"dag_run": finished, "tasks": tasks, "local_run": local_run}


def _failed_logs(airflow, dag_run: dict, tasks: list[dict]) -> str:
    parts = []
    for ti in tasks:
        if ti["state"] not in ("success", "skipped"):
            try:
                text = airflow.task_log(DAG_ID, dag_run["dag_run_id"], ti["task_id"], max(1, ti["try_number"]),
                                        ti["map_index"])
            except Exception as exc:  # noqa: BLE001 - a log we cannot read must not hide the failure
                text = f"(log not readable: {exc})"
            parts.append(f"--- {ti['task_id']}[{ti['map_index']}] {ti['state']} on {ti['hostname']} ---\n"
                         + "\n".join(text.splitlines()[-40:]))
    return "\n".join(parts)


def test_the_dag_run_succeeds_on_celery(runs, celery_airflow):
    tasks = runs["tasks"]
    states = {(t["task_id"], t["map_index"]): t["state"] for t in tasks}
    assert runs["dag_run"]["state"] == "success" and set(states.values()) == {"success"}, (
        f"{states}\n{_failed_logs(celery_airflow, runs['dag_run'], tasks)}")


def test_mapped_embed_shards_ran_on_both_workers(runs):
    shards = sorted((t for t in runs["tasks"] if t["task_id"] == "embed_shard"), key=lambda t: t["map_index"])
    assert [t["map_index"] for t in shards] == list(range(SHARDS))
    assert all(t["state"] == "success" for t in shards), [(t["map_index"], t["state"]) for t in shards]
    hosts = {t["map_index"]: t["hostname"] for t in shards}
    assert set(hosts.values()) == set(WORKERS), f"embed_shard map index -> worker: {hosts}"
    # Every task that ran did so on one of the two workers: the executor is Celery, not the scheduler.
    # (A task without a hostname never ran anywhere: the scheduler marks an EmptyOperator done itself.)
    ran = {(t["task_id"], t["map_index"]): t["hostname"] for t in runs["tasks"] if t["hostname"]}
    assert set(ran.values()) <= set(WORKERS), ran
    assert {"start", "crawl", "embed_plan", "embed", "build", "publish"} <= {task for task, _ in ran}


def test_the_published_snapshot_equals_a_local_runs(runs, distributed_databases):
    assert runs["dag_run"]["state"] == "success", "the DAG run failed (see the test above)"
    dag_snap, dag_rows, dag_vectors = snapshot_contents(distributed_databases["dag"], SITE)
    local_snap, local_rows, local_vectors = snapshot_contents(distributed_databases["local"], SITE)

    assert dag_snap.state == local_snap.state == "published"
    assert dag_snap.run_id == f"{SITE}__{runs['dag_run']['dag_run_id']}"
    assert local_snap.run_id == runs["local_run"]
    for field in ("embedding_provider", "embedding_model", "dimensions", "tokenizer", "config_hash",
                  "extractor_version", "chunker_version"):
        assert getattr(dag_snap, field) == getattr(local_snap, field), field
    assert dag_snap.counts["chunks"] == local_snap.counts["chunks"] == len(dag_rows) > SHARDS

    assert [r["chunk_id"] for r in dag_rows] == [r["chunk_id"] for r in local_rows]
    for dag_row, local_row in zip(dag_rows, local_rows):
        assert dag_row == local_row
    assert dag_vectors.shape == local_vectors.shape == (len(dag_rows), dag_snap.dimensions)
    worst = float(np.abs(dag_vectors - local_vectors).max())
    print(f"\n{len(dag_rows)} chunks alike; largest difference of a vector component: {worst:.2e}")
    assert worst <= VECTOR_TOLERANCE, f"largest difference of a vector component: {worst}"
