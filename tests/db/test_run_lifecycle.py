"""A run's life beyond its stages: one run of a site at a time, dead runs cleaned up, old Data Docs pruned.

A second run of a site is stopped with the first one named, unless the first is dead.

"Dead" is decided where it can be known: a process on this host that no longer
exists (or whose pid now names another process), or, for the site's DAG, a
sitekb run an earlier DAG run left behind. A dead run is marked failed, its
staged rows go and its half-built snapshot table is dropped by the run that
takes over.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from sitekb import engine
from sitekb.errors import RunInProgress
from sitekb.store import runs, snapshots
from tests.db.factory import make_snapshot, random_pages


def _status(conn, run_id):
    return conn.execute("SELECT status, error FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_of_a_site_is_stopped_and_names_the_first(conn, settings, demo_config):
    engine.start(conn, settings, demo_config, "first", {})
    with pytest.raises(RunInProgress, match=r"being refreshed by run first .*process \d+ on .*--take-over"):
        engine.start(conn, settings, demo_config, "second", {})
    assert _status(conn, "first")[0] == "running"
    # The same run may start again (a retried start task), and another site is not held up.
    engine.start(conn, settings, demo_config, "first", {})
    other = demo_config.model_copy(update={"name": "other"})
    engine.start(conn, settings, other, "other-run", {})


def test_two_runs_starting_at_once_give_exactly_one(database_url, settings, demo_config):
    from sitekb import store

    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def start(run_id):
        with store.connection(database_url) as conn:
            barrier.wait()
            try:
                engine.start(conn, settings, demo_config, run_id, {})
                outcomes.append("started")
            except RunInProgress:
                outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "started"]


def test_a_run_whose_process_died_is_failed_and_cleaned_up_by_the_next(conn, settings, demo_config):
    engine.start(conn, settings, demo_config, "killed", {}, held_by={"host": engine.holder()["host"],
                                                                     "pid": _dead_pid()})
    building = make_snapshot(conn, "demo", random_pages("demo"), state="building")
    conn.execute("UPDATE sitekb.snapshots SET run_id = 'killed' WHERE snapshot_id = %s", (building.snapshot_id,))
    conn.execute("UPDATE sitekb.documents SET run_id = 'killed' WHERE run_id = %s", (building.run_id,))
    engine.start(conn, settings, demo_config, "next", {})
    status, error = _status(conn, "killed")
    assert status == "failed" and "is gone; taken over by run next" in error
    assert conn.execute("SELECT count(*) FROM sitekb.documents WHERE run_id = 'killed'").fetchone()[0] == 0
    snap = snapshots.get(conn, building.snapshot_id)
    assert snap.state == "rejected" and snap.table_name is None
    assert conn.execute("SELECT to_regclass(%s)", (f"sitekb_snapshots.snap_{building.snapshot_id}",)).fetchone()[0] \
        is None


def test_a_reused_pid_does_not_keep_a_dead_run_alive(conn, settings, demo_config):
    me = engine.holder()
    engine.start(conn, settings, demo_config, "old", {}, held_by={**me, "since": (me["since"] or 0) - 1})
    engine.start(conn, settings, demo_config, "new", {})
    assert "names another process" in _status(conn, "old")[1]


def test_an_airflow_run_blocks_the_cli_and_is_taken_over_by_the_sites_next_dag_run(conn, settings, demo_config):
    tasks = pytest.importorskip("sitekb.orchestration.tasks")
    engine.start(conn, settings, demo_config, "demo__manual__1", {}, held_by={"airflow": "manual__1"})
    with pytest.raises(RunInProgress, match="Airflow DAG run manual__1"):
        engine.start(conn, settings, demo_config, "cli-run", {})
    gone = tasks._gone_for_airflow("manual__2")
    assert gone({"holder": {"airflow": "manual__1"}}).startswith("its Airflow DAG run manual__1 has ended")
    assert gone({"holder": {"airflow": "manual__2"}}) is None
    engine.start(conn, settings, demo_config, "demo__manual__2", {}, held_by={"airflow": "manual__2"}, gone=gone)
    assert _status(conn, "demo__manual__1")[0] == "failed"


def test_take_over_marks_a_run_held_elsewhere_failed(conn, settings, demo_config):
    engine.start(conn, settings, demo_config, "elsewhere", {}, held_by={"host": "another-machine", "pid": 4242})
    with pytest.raises(RunInProgress, match="process 4242 on another-machine"):
        engine.start(conn, settings, demo_config, "here", {})
    engine.start(conn, settings, demo_config, "here", {}, gone=engine.declare_gone)
    assert "taken over on request (process 4242 on another-machine)" in _status(conn, "elsewhere")[1]
    assert runs.load(conn, "here").status == "running"


def test_data_docs_are_kept_only_for_the_runs_and_snapshots_that_are_kept(conn, settings, demo_config, tmp_path):
    from sitekb.quality.gate import data_docs_dir, prune_data_docs

    kept = make_snapshot(conn, "demo", random_pages("demo"), publish_as="production")
    for n in range(4):
        engine.start(conn, settings, demo_config, f"demo__run_{n}", {})
        runs.finish(conn, f"demo__run_{n}", "succeeded")
    ids = [kept.run_id] + [f"demo__run_{n}" for n in range(4)]
    for run_id in ids:
        folder = data_docs_dir(demo_config, run_id, tmp_path)
        folder.mkdir(parents=True)
        (folder / "index.html").write_text("<html></html>")
    keep = runs.worth_keeping(conn, "demo", 2)
    assert keep == {kept.run_id, "demo__run_3", "demo__run_2"}
    deleted = prune_data_docs(demo_config, tmp_path, keep)
    assert sorted(deleted) == ["demo__run_0", "demo__run_1"]
    assert sorted(p.name for p in (tmp_path / "data_docs" / "demo").iterdir()) == \
        sorted(data_docs_dir(demo_config, r, tmp_path).name for r in keep)


def test_a_run_error_and_the_cli_error_line_are_redacted(database_url, conn, capsys, monkeypatch):
    from sitekb.cli import main
    from sitekb.sites import site_from_dict
    from sitekb.store import runs

    site = site_from_dict({"name": "r", "start_urls": ["https://r.example/"],
                           "crawl": {"contact_url": "https://ops.example/bot"}})
    runs.start(conn, site, "r1", {}, {})
    runs.fail(conn, "r1", RuntimeError("embedding server https://u:topsecret@e.example/v1 is down"))
    assert "topsecret" not in conn.execute("SELECT error FROM sitekb.runs WHERE run_id = 'r1'").fetchone()[0]
    monkeypatch.setenv("SITEKB_DATABASE_URL", "postgresql://kb:topsecret@127.0.0.1:1/none")
    assert main(["snapshots", "list"]) == 3
    err = capsys.readouterr().err
    assert "topsecret" not in err and "127.0.0.1:1" in err
