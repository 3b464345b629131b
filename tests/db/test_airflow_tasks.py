"""The Airflow task bodies against the real store, called as Airflow calls them (a task's context faked).

The live tests (tests/airflow_live) drive the same bodies through a running
Airflow; these pin down the decisions that must hold however a task is
retried or cleared.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sitekb.settings import DEFAULT_SITES_DIR
from sitekb.store import runs, snapshots
from tests.db.factory import make_snapshot, random_pages
from tests.unit.test_airflow_notify import Receiver

tasks = pytest.importorskip("sitekb.orchestration.tasks")

DEMO = str(DEFAULT_SITES_DIR / "demo.yaml")


@pytest.fixture
def airflow_env(database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for name in ("AIRFLOW_CONN_SITEKB_DB", "AIRFLOW_CONN_SITEKB_OPENAI", "SITEKB_DEMO_START_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class FakeTI:
    """The few things of a task instance a callback reads."""

    def __init__(self, task_id: str, xcom: dict):
        self.task_id, self.run_id, self._xcom = task_id, "manual__1", xcom

    def xcom_pull(self, task_ids: str):
        return self._xcom.get(task_ids)


def test_the_demo_is_crawled_where_the_stack_serves_it(conn, airflow_env):
    airflow_env.setenv("SITEKB_DEMO_START_URL", "http://sitekb-demo:8765/")
    run_id = tasks.start(DEMO, {}, "manual__1")
    assert run_id == "demo__manual__1"
    assert runs.load(conn, run_id).site.base_url == "http://sitekb-demo:8765"
    # A start_url param wins over it.
    other = tasks.start(DEMO, {"start_url": "http://127.0.0.1:9999"}, "manual__2")
    assert runs.load(conn, other).site.base_url == "http://127.0.0.1:9999"


def test_a_cleared_start_of_a_published_run_leaves_it_finished(conn, airflow_env):
    run_id = tasks.start(DEMO, {"dry_run": True}, "manual__1")
    assert runs.load(conn, run_id).params["dry_run"] is True
    runs.finish(conn, run_id, "succeeded")
    assert tasks.start(DEMO, {}, "manual__1") == run_id
    assert runs.load(conn, run_id).status == "succeeded"


def test_a_rebuild_of_a_site_never_crawled_fails_its_start_and_records_no_run(conn, airflow_env):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="nothing staged to rebuild from"):
        tasks.start(DEMO, {"rebuild": True}, "manual__1")
    assert runs.find(conn, "demo__manual__1") is None


def test_a_task_that_fails_for_good_ends_the_run_failed_with_the_reason(conn, airflow_env):
    run_id = tasks.start(DEMO, {}, "manual__1")
    tasks.mark_run_failed({"ti": FakeTI("embed_shard", {"start": run_id}), "exception": TimeoutError("read timed out")})
    row = conn.execute("SELECT status, error FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row == ("failed", "task embed_shard failed: read timed out")


def test_an_approvers_rejection_blocks_the_run_and_is_in_the_audit_log(conn, airflow_env):
    receiver = Receiver()
    try:
        site = DEFAULT_SITES_DIR / "demo.yaml"
        live = make_snapshot(conn, "demo", random_pages("demo"), publish_as="production")
        run_id = tasks.start(str(site), {}, "manual__1")
        candidate = make_snapshot(conn, "demo", random_pages("demo", seed=1), seed=1)
        conn.execute("UPDATE sitekb.snapshots SET run_id = %s WHERE snapshot_id = %s", (run_id, candidate.snapshot_id))
        conn.execute("UPDATE sitekb.runs SET config = jsonb_set(config, '{airflow,notifiers}', %s::jsonb) "
                     "WHERE run_id = %s", (f'[{{"kind": "webhook", "url": "{receiver.url}", "events": ["rejected"]}}]',
                                           run_id))
        answer = {"chosen_options": ["Reject"], "params_input": {"reason": "still says the old product name"},
                  "responded_by_user": {"id": "maria", "name": "maria"}}
        ti = FakeTI("approve", {"approve": answer, "start": run_id})
        tasks._record_rejection({"ti": ti, "dag_run": SimpleNamespace(run_id="manual__1")})
        assert snapshots.get(conn, candidate.snapshot_id).state == "rejected"
        assert snapshots.resolve(conn, "demo").snapshot_id == live.snapshot_id
        assert runs.load(conn, run_id).status == "blocked"
        event = snapshots.history(conn, "demo")[0]
        assert (event["decision"], event["actor"], event["reason"], event["to_snapshot"]) == \
            ("rejected", "airflow-user:maria", "still says the old product name", candidate.snapshot_id)
        [body] = receiver.bodies
        assert body["event"] == "rejected" and "rejected by maria" in body["text"]
        # An approval is not a rejection: nothing happens.
        tasks._record_rejection({"ti": FakeTI("approve", {"approve": {**answer, "chosen_options": ["Approve"]},
                                                           "start": run_id}),
                                 "dag_run": SimpleNamespace(run_id="manual__1")})
        assert len(receiver.bodies) == 1
    finally:
        receiver.close()


def test_a_task_of_a_finished_run_is_skipped_with_the_reason(conn, airflow_env):
    from airflow.sdk.exceptions import AirflowSkipException

    run_id = tasks.start(DEMO, {}, "manual__1")
    runs.finish(conn, run_id, "blocked", "documents_drop: documents fell from 3 to 1")
    finished_at = conn.execute("SELECT finished_at FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()[0]
    for call in (lambda: tasks.run_stage("crawl", run_id), lambda: tasks.embed_plan(run_id),
                 lambda: tasks.embed_shard(run_id, [0, 1]),
                 lambda: tasks.skip_if_finished({"ti": FakeTI("approve", {"start": run_id})})):
        with pytest.raises(AirflowSkipException, match=rf"run {run_id} of 'demo' was blocked .* `sitekb run demo "
                                                       rf"--from STAGE --run {run_id}` takes it up again"):
            call()
    assert tasks.start(DEMO, {}, "manual__1") == run_id          # hands the run id on, starts nothing
    assert tasks.report(run_id, "demo")["status"] == "blocked"   # the one task that reads a finished run
    assert conn.execute("SELECT status, finished_at FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone() == \
        ("blocked", finished_at)


def test_a_rejection_answered_after_the_run_published_changes_nothing(conn, airflow_env):
    receiver = Receiver()
    try:
        live = make_snapshot(conn, "demo", random_pages("demo"), publish_as="production")
        run_id = tasks.start(DEMO, {}, "manual__1")
        conn.execute("UPDATE sitekb.snapshots SET run_id = %s WHERE snapshot_id = %s", (run_id, live.snapshot_id))
        conn.execute("UPDATE sitekb.runs SET config = jsonb_set(config, '{airflow,notifiers}', %s::jsonb) "
                     "WHERE run_id = %s", (f'[{{"kind": "webhook", "url": "{receiver.url}", "events": ["rejected"]}}]',
                                           run_id))
        runs.finish(conn, run_id, "succeeded")
        events = len(snapshots.history(conn, "demo"))
        answer = {"chosen_options": ["Reject"], "params_input": {"reason": "too late"},
                  "responded_by_user": {"id": "maria", "name": "maria"}}
        tasks._record_rejection({"ti": FakeTI("approve", {"approve": answer, "start": run_id}),
                                 "dag_run": SimpleNamespace(run_id="manual__1")})
        assert runs.load(conn, run_id).status == "succeeded"
        assert snapshots.resolve(conn, "demo").snapshot_id == live.snapshot_id
        assert snapshots.get(conn, live.snapshot_id).state == "published"
        assert len(snapshots.history(conn, "demo")) == events and receiver.bodies == []
    finally:
        receiver.close()
