"""Every task of a site's DAG, run again on a finished run (Airflow's "clear task"), changes nothing.

One world is made once, by running the site DAG's tasks in order through the
real task callables and the callbacks the DAG gives them (as Airflow would,
in this process), into a database that each case then copies
(``CREATE DATABASE ... TEMPLATE``):

- ``superseded``: published to production, then replaced there by ``live``;
- ``live``: published to production, the live snapshot;
- ``retried``: published to staging after its ``embed`` task failed for good
  (the run was marked failed) and was cleared and run again;
- ``rejected``: blocked by the quality gate (a gutted crawl);
- ``declined``: passed the gate, then its approver answered Reject.

Each case runs one task of the DAG again for one of those runs, with the run's
own XCom inputs, then compares everything that must not change: each run's
status, error and timestamps and what its stages recorded, the aliases, every
snapshot's state and counts, the tables and their row counts (ledgers,
quarantine, alias history, the snapshot tables), the chunk ids of every
snapshot and of the staged chunks, the snapshots frontends see in
``sitekb_api.snapshots`` and the answers of queries pinned to them and to each
alias; and that no notification is sent and no Asset event emitted again. The
tasks are the DAG's own (``build_dag`` over the registry), so a new task is
covered or fails here.
"""

from __future__ import annotations

import copy
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from sitekb import stages, store
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings
from sitekb.sites import load_site, site_from_dict
from tests.unit.test_airflow_notify import Receiver

tasks = pytest.importorskip("sitekb.orchestration.tasks")
from airflow.sdk.exceptions import AirflowSkipException  # noqa: E402

from sitekb.orchestration import dag_factory  # noqa: E402

PAGES = ("lead-scoring-fundamentals", "utm-governance", "mql-vs-sql")
QUESTION = "How many points does a demo request add to a lead score?"
APPROVE = {"chosen_options": ["Approve"], "params_input": {"reason": "looks right"},
           "responded_by_user": {"id": "maria", "name": "maria"}}
# A cleared approval is put to a person again; the harmful answer is the one a finished run must survive.
REJECT = {"chosen_options": ["Reject"], "params_input": {"reason": "changed my mind"},
          "responded_by_user": {"id": "maria", "name": "maria"}}
WORLD_DB, CASE_DB = "sitekb_idem_world", "sitekb_idem_case"
ENDS = ("live", "superseded", "retried", "rejected", "declined")


def _site(base_url: str, hook: str, *, gutted: bool = False) -> dict:
    """Three demo articles (one when ``gutted``), approval before publishing, every alert to ``hook``."""
    config = load_site("demo").with_base_url(base_url)
    data = config.model_dump(mode="json")
    slugs = PAGES[:1] if gutted else PAGES
    data["start_urls"] = [config.absolute(f"/articles/{slug}.html") for slug in slugs]
    data["crawl"].update(sitemaps=[], include_patterns=[rf"/articles/({'|'.join(slugs)})\.html$"])
    data["golden_questions"] = [{"question": QUESTION, "expected_url": f"/articles/{PAGES[0]}.html"}]
    data["airflow"] = {"schedule": None, "approval": {"required": True},
                       "notifiers": [{"kind": "webhook", "url": hook,
                                      "events": ["failed", "rejected", "published", "approval"]}]}
    return data


def _dag_tasks() -> list[str]:
    """The task ids of a site's DAG with every optional task configured (the approval)."""
    config = site_from_dict(_site("http://127.0.0.1:8765", "http://127.0.0.1:9/hook"))
    return sorted(dag_factory.build_dag(config, Path("demo.yaml")).task_ids)


DAG_TASKS = _dag_tasks()


# -- a DAG run, task by task, as Airflow runs it ------------------------------------------------

class Outlets(dict):
    """The ``outlet_events`` a task is given: what it adds is kept."""

    def __init__(self, emitted: list):
        super().__init__()
        self.emitted = emitted

    def __missing__(self, key):
        emitted = self.emitted

        class Accessor:
            def add(self, asset, extra=None):
                emitted.append((key, asset, extra))

        return Accessor()


class TI:
    """The parts of a task instance the task bodies and callbacks read."""

    def __init__(self, task_id: str, dag_run: "DagRun"):
        self.task_id, self.dag_id, self.run_id, self.try_number = task_id, dag_run.dag.dag_id, dag_run.dag_run_id, 1
        self._xcom = dag_run.xcom

    def xcom_pull(self, task_ids: str):
        return self._xcom.get(task_ids)


@dataclass
class DagRun:
    site_file: Path
    dag_run_id: str
    params: dict
    answer: dict = field(default_factory=lambda: APPROVE)   # what the approver answered
    dag: object = None
    xcom: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    emitted: list = field(default_factory=list)     # Asset events the tasks emitted

    def __post_init__(self):
        config = load_site(str(self.site_file))
        self.site = config.name
        self.dag = dag_factory.build_dag(config, self.site_file)
        self.params = {"full_recrawl": False, "dry_run": False, "alias": DEFAULT_ALIAS, "start_url": None,
                       **self.params}

    @property
    def run_id(self) -> str:
        return self.xcom["start"]

    def fork(self) -> "DagRun":
        """The same DAG run with its own copy of what its tasks left (XCom, states, events)."""
        forked = copy.copy(self)
        forked.xcom, forked.states, forked.emitted = dict(self.xcom), dict(self.states), list(self.emitted)
        return forked


def _body(dag_run: DagRun, task_id: str, answer: dict) -> Callable[[], object]:
    """What the task ``task_id`` runs, with this DAG run's XCom as its inputs."""
    if task_id == "start":
        return lambda: tasks.start(str(dag_run.site_file), dag_run.params, dag_run.dag_run_id)
    run_id = dag_run.run_id
    if task_id == "publish":
        return lambda: tasks.run_stage("publish", run_id, outlet_events=Outlets(dag_run.emitted),
                                       approval=dag_run.xcom.get("approve"))
    if task_id in stages.NAMES:
        return lambda: tasks.run_stage(task_id, run_id)

    def shards():
        planned = dag_run.xcom.get("embed_plan")
        if planned == [] and "embed_shard" not in dag_run.states:
            raise AirflowSkipException("no shard: a mapped task of zero length is skipped")
        return [tasks.embed_shard(run_id, shard) for shard in planned or [[0, 1]]]

    bodies = {
        "embed_plan": lambda: tasks.embed_plan(run_id),
        "embed_shard": shards,
        "approve": lambda: answer,                     # the ApprovalOperator returns the person's answer
        "report": lambda: tasks.report(run_id, dag_run.site),
        "outcome": lambda: None,                       # an EmptyOperator
    }
    if task_id not in bodies:
        pytest.fail(f"task {task_id!r} of the site DAG has no body in this test: add how Airflow runs it")
    return bodies[task_id]


def run_task(dag_run: DagRun, task_id: str, *, answer: dict | None = None, fail: Exception | None = None) -> str:
    """Run one task as Airflow does: pre_execute hook, body, then the callbacks of the state it ends in."""
    task = dag_run.dag.get_task(task_id)
    ti = TI(task_id, dag_run)
    context = {"ti": ti, "task_instance": ti, "task": task, "params": dag_run.params,
               "dag_run": SimpleNamespace(run_id=dag_run.dag_run_id, dag_id=dag_run.dag.dag_id)}
    try:
        hook = getattr(task, "_pre_execute_hook", None)   # the operator's `pre_execute=` argument
        if hook is not None:
            hook(context)
        if fail is not None:
            raise fail
        result = _body(dag_run, task_id, answer or dag_run.answer)()
    except AirflowSkipException:
        state, callbacks = "skipped", task.on_skipped_callback
    except Exception as exc:  # noqa: BLE001 - a task's failure is its state here, as in Airflow
        state, callbacks = "failed", task.on_failure_callback
        context["exception"] = exc
    else:
        state, callbacks = "success", task.on_success_callback
        dag_run.xcom[task_id] = result
    for callback in callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []:
        callback(context)
    dag_run.states[task_id] = state
    return state


def _in_order(dag) -> list[str]:
    order, done = [], set()
    while len(order) < len(dag.task_ids):
        for task_id in sorted(dag.task_ids):
            if task_id not in done and dag.get_task(task_id).upstream_task_ids <= done:
                order.append(task_id)
                done.add(task_id)
    return order


def run_dag(dag_run: DagRun, *, only: set[str] | None = None, fail: dict[str, Exception] | None = None) -> None:
    """Every task (or those in ``only``) in dependency order, with the trigger rules the DAG uses."""
    for task_id in _in_order(dag_run.dag):
        if only is not None and task_id not in only:
            continue
        task = dag_run.dag.get_task(task_id)
        upstream = [dag_run.states[u] for u in task.upstream_task_ids]
        broken = any(s in ("failed", "upstream_failed") for s in upstream)
        declined = any(u == "approve" and (dag_run.xcom.get(u) or {}).get("chosen_options") == ["Reject"]
                       for u in task.upstream_task_ids)
        if declined:
            dag_run.states[task_id] = "skipped"   # the ApprovalOperator skips what follows a Reject
        elif task.trigger_rule != "all_done" and broken:
            dag_run.states[task_id] = "upstream_failed"
        elif task.trigger_rule == "all_success" and "skipped" in upstream:
            dag_run.states[task_id] = "skipped"
        else:
            run_task(dag_run, task_id, fail=(fail or {}).get(task_id))


# -- the world: five finished runs ------------------------------------------------------------

def _url_of(server_url: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{dbname}"))


def _recreate(server_url: str, name: str, template: str | None = None) -> str:
    import psycopg

    with store.connect(server_url, register=False) as admin:
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test database's role may not create databases (CREATEDB), which these cases copy")
    return _url_of(server_url, name)


def _drop(server_url: str, name: str) -> None:
    with store.connect(server_url, register=False) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class World:
    runs: dict[str, DagRun]
    receiver: Receiver
    home: Path
    baseline: dict      # state_of() the world: what every copy holds before a task runs again


@pytest.fixture(scope="module")
def world(database_server, demo_site, tmp_path_factory):
    folder = tmp_path_factory.mktemp("idempotence")
    receiver = Receiver()
    patch = pytest.MonkeyPatch()
    try:
        url = _recreate(database_server, WORLD_DB)
        patch.setenv("SITEKB_DATABASE_URL", url)
        patch.setenv("SITEKB_HOME", str(folder / "home"))
        patch.setenv("AIRFLOW_HOME", str(folder / "airflow"))
        for name in ("AIRFLOW_CONN_SITEKB_DB", "AIRFLOW_CONN_SITEKB_OPENAI", "SITEKB_DEMO_START_URL"):
            patch.delenv(name, raising=False)
        with store.connection(url) as conn:
            store.migrate(conn)
        full, gutted = folder / "demo.yaml", folder / "demo-gutted.yaml"
        full.write_text(yaml.safe_dump(_site(demo_site.base_url, receiver.url)))
        gutted.write_text(yaml.safe_dump(_site(demo_site.base_url, receiver.url, gutted=True)))
        runs = {
            "superseded": DagRun(full, "manual__superseded", {}),
            "live": DagRun(full, "manual__live", {}),
            "retried": DagRun(full, "manual__retried", {"alias": "staging"}),
            "rejected": DagRun(gutted, "manual__rejected", {}),
            "declined": DagRun(full, "manual__declined", {}, answer=REJECT),
        }
        for end in ("superseded", "live"):
            run_dag(runs[end])
            assert runs[end].states["publish"] == "success", runs[end].states
        retried = runs["retried"]
        run_dag(retried, fail={"embed": TimeoutError("the embedding server stopped answering")})
        with store.connection(url) as conn:
            assert conn.execute("SELECT status FROM sitekb.runs WHERE run_id = %s",
                                (retried.run_id,)).fetchone()[0] == "failed"
        # Clear the failed task and everything after it: the run is taken up and published.
        again = {"embed", *retried.dag.get_task("embed").get_flat_relative_ids(upstream=False)}
        run_dag(retried, only=again)
        assert retried.states["publish"] == "success", retried.states
        run_dag(runs["rejected"])
        assert runs["rejected"].states["evaluate"] == "failed" and runs["rejected"].states["publish"] == \
            "upstream_failed"
        run_dag(runs["declined"])
        assert runs["declined"].states["approve"] == "success" and runs["declined"].states["publish"] == "skipped"
        with store.connection(url) as conn:
            status = dict(conn.execute("SELECT run_id, status FROM sitekb.runs").fetchall())
            aliases = dict(conn.execute("SELECT alias, run_id FROM sitekb.aliases JOIN sitekb.snapshots "
                                        "USING (snapshot_id)").fetchall())
            states = dict(conn.execute("SELECT run_id, state FROM sitekb.snapshots").fetchall())
        ids = {end: dag_run.run_id for end, dag_run in runs.items()}
        assert status == {ids["superseded"]: "succeeded", ids["live"]: "succeeded", ids["retried"]: "succeeded",
                          ids["rejected"]: "blocked", ids["declined"]: "blocked"}
        assert aliases == {"production": ids["live"], "staging": ids["retried"]}
        assert states[ids["superseded"]] == "retired" and states[ids["rejected"]] == states[ids["declined"]] == \
            "rejected"
        with store.connection(url) as conn:
            baseline = state_of(conn, Settings.from_env(database_url=url, home=folder / "home"))
        yield World(runs, receiver, folder / "home", baseline)
    finally:
        _drop(database_server, WORLD_DB)
        receiver.close()
        patch.undo()


@pytest.fixture
def case(world, database_server, monkeypatch):
    """A copy of the world's database for one case; SITEKB_DATABASE_URL points at it."""
    url = _recreate(database_server, CASE_DB, template=WORLD_DB)
    monkeypatch.setenv("SITEKB_DATABASE_URL", url)
    conn = store.connect(url)
    yield conn, Settings.from_env(database_url=url, home=world.home)
    conn.close()
    _drop(database_server, CASE_DB)


# -- what must not change ---------------------------------------------------------------------

def _rows(conn, query: str, params=()) -> list[tuple]:
    return [tuple(row) for row in conn.execute(query, params).fetchall()]


def state_of(conn, settings: Settings) -> dict[str, object]:
    """Everything a re-run task of a finished run must leave as it is."""
    from sitekb.query import search

    state: dict[str, object] = {
        "runs": _rows(conn, "SELECT run_id, status, error, started_at, finished_at, params, config_hash, embedding, "
                            "stages FROM sitekb.runs ORDER BY run_id"),
        "aliases": _rows(conn, "SELECT site, alias, snapshot_id, updated_at FROM sitekb.aliases ORDER BY 1, 2"),
        "snapshots": _rows(conn, "SELECT snapshot_id, run_id, state, table_name, pinned, counts, reasons, built_at "
                                 "FROM sitekb.snapshots ORDER BY 1"),
        "alias history": _rows(conn, "SELECT id, alias, from_snapshot, to_snapshot, actor, reason, decision "
                                     "FROM sitekb.alias_events ORDER BY id"),
        "visible to frontends": _rows(conn, "SELECT snapshot_id, state, aliases FROM sitekb_api.snapshots ORDER BY 1"),
        "documents": _rows(conn, "SELECT run_id, url, status, content_hash FROM sitekb.documents ORDER BY 1, 2"),
        "staged chunk ids": _rows(conn, "SELECT run_id, array_agg(chunk_id ORDER BY chunk_id) FROM sitekb.chunks "
                                        "GROUP BY run_id ORDER BY run_id"),
    }
    tables = _rows(conn, """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE c.relkind IN ('r', 'p') AND (n.nspname IN ('sitekb', 'sitekb_snapshots'))
                            ORDER BY 1, 2""")
    # Every ledger (exclusions, quarantine, fetch failures, crawl statistics, alias events, ...) and snapshot table.
    state["row counts"] = {f"{schema}.{table}": conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
                           for schema, table in tables}
    state["snapshot chunk ids"] = {
        table: _rows(conn, f'SELECT chunk_id FROM sitekb_snapshots."{table}" ORDER BY chunk_id')
        for (table,) in _rows(conn, "SELECT table_name FROM sitekb.snapshots WHERE table_name IS NOT NULL")}
    answers = {}
    for snapshot_id, site in _rows(conn, "SELECT snapshot_id, site FROM sitekb_api.snapshots ORDER BY 1"):
        answers[f"snapshot {snapshot_id}"] = [p.chunk_id for p in search(conn, settings, QUESTION, site=site,
                                                                          snapshot_id=snapshot_id)]
    for site, alias in _rows(conn, "SELECT site, alias FROM sitekb.aliases ORDER BY 1, 2"):
        answers[f"{site}/{alias}"] = [p.chunk_id for p in search(conn, settings, QUESTION, site=site, alias=alias)]
    state["answers"] = answers
    return state


def _difference(before, after) -> dict:
    """Only what differs, by key (a row's first column): before and after, of the fields that changed."""
    def keyed(value):
        return value if isinstance(value, dict) else {row[0]: row for row in value}

    def short(value):
        text = repr(value)
        return text if len(text) < 300 else text[:300] + "..."

    old, new = keyed(before), keyed(after)
    changed = {}
    for key in sorted(set(old) | set(new), key=str):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if isinstance(was, tuple) and isinstance(now, tuple) and len(was) == len(now):
            changed[key] = {i: (short(a), short(b)) for i, (a, b) in enumerate(zip(was, now)) if a != b}
        else:
            changed[key] = (short(was), short(now))
    return changed


def test_the_world_has_every_end_state_and_frontends_can_ask_the_published_snapshots(world, case):
    conn, settings = case
    state = state_of(conn, settings)
    assert state == world.baseline      # a copy is the world
    assert set(state["answers"]) >= {"demo/production", "demo/staging"}
    assert all(state["answers"].values()), state["answers"]
    live = world.runs["live"].run_id
    assert state["answers"]["demo/production"] == state["answers"][
        f"snapshot {conn.execute('SELECT snapshot_id FROM sitekb.snapshots WHERE run_id = %s', (live,)).fetchone()[0]}"]


def test_every_stage_and_optional_task_is_a_task_of_the_site_dag():
    assert set(stages.NAMES) <= set(DAG_TASKS)
    assert {"start", "embed_plan", "embed_shard", "approve", "report", "outcome"} <= set(DAG_TASKS)


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("task_id", DAG_TASKS)
def test_a_task_run_again_on_a_finished_run_changes_nothing(world, case, task_id, end):
    conn, settings = case
    dag_run = world.runs[end].fork()
    before = world.baseline
    sent, emitted = len(world.receiver.bodies), len(dag_run.emitted)

    outcome = run_task(dag_run, task_id, answer=REJECT)

    after = state_of(conn, settings)
    changed = {key: _difference(before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, f"{task_id} run again on the {end} run changed {sorted(changed)}: {changed}"
    assert world.receiver.bodies[sent:] == [], f"{task_id} run again sent a notification again"
    assert dag_run.emitted[emitted:] == [], f"{task_id} run again emitted an Asset event again"
    assert outcome in ("success", "skipped"), f"{task_id} run again on the {end} run ended {outcome}"
    if task_id == "start":
        assert dag_run.xcom["start"] == world.runs[end].run_id   # the later tasks still get the run id
    if end in ("rejected", "declined"):
        published = conn.execute("SELECT count(*) FROM sitekb.aliases JOIN sitekb.snapshots USING (snapshot_id) "
                                 "WHERE run_id = %s", (dag_run.run_id,)).fetchone()[0]
        assert published == 0
