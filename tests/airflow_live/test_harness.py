"""The live Airflow harness itself: a DAG file dropped into its folder is parsed, triggered through the
REST API, run by the LocalExecutor through the execution API, and its log and XCom read back."""

from __future__ import annotations

import textwrap

import pytest

from tests.airflow_live.harness import APIError

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE = textwrap.dedent('''
    """A DAG of the harness test: one task that logs its conf and returns a small value."""
    import logging

    import pendulum
    from airflow.sdk import dag, task


    @dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["test"],
         doc_md="The live Airflow harness's probe.")
    def harness_probe():
        @task(retries=0)
        def echo(params=None, dag_run=None):
            logging.getLogger("sitekb.harness_probe").info("probe got %s", dag_run.conf)
            return {"echo": dag_run.conf.get("word")}

        echo()


    harness_probe()
''')


def test_a_dag_runs_end_to_end_through_the_rest_api(live_airflow, live_dags_folder):
    path = live_dags_folder / "harness_probe.py"
    path.write_text(PROBE, encoding="utf-8")
    try:
        dag = live_airflow.wait_for_dag("harness_probe")
        assert dag["is_paused"] is True          # new DAGs start paused, as in production
        live_airflow.unpause("harness_probe")
        run = live_airflow.trigger("harness_probe", {"word": "pgvector"})
        finished = live_airflow.wait_for_run("harness_probe", run["dag_run_id"], timeout=180)
        assert finished["state"] == "success", live_airflow.log_tail("scheduler")
        [ti] = live_airflow.task_instances("harness_probe", run["dag_run_id"])
        assert (ti["task_id"], ti["state"], ti["try_number"]) == ("echo", "success", 1)
        log = live_airflow.task_log("harness_probe", run["dag_run_id"], "echo")
        assert "probe got {'word': 'pgvector'}" in log and "[sitekb.harness_probe]" in log
        xcom = live_airflow.rest("GET", f"/api/v2/dags/harness_probe/dagRuns/{run['dag_run_id']}/taskInstances/"
                                        "echo/xcomEntries/return_value")
        assert xcom["value"] == {"echo": "pgvector"}
        # A viewer may read the run but not trigger one.
        assert live_airflow.rest("GET", f"/api/v2/dags/harness_probe/dagRuns/{run['dag_run_id']}",
                                 user="viewer")["state"] == "success"
        with pytest.raises(APIError) as refused:
            live_airflow.rest("POST", "/api/v2/dags/harness_probe/dagRuns", json={"logical_date": None},
                              user="viewer")
        assert refused.value.status == 403
    finally:
        path.unlink()
