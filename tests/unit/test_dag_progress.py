"""The display of `sitekb run SITE --engine airflow`: Airflow's `dags test` output folded into phases and tasks.

The lines are real ones from `airflow dags test sitekb_demo` (Airflow 3.3.2; `last_dag_test.log` of a
successful run, and of a run whose start URL was unreachable), trimmed of ids that do not matter here.
"""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from sitekb.orchestration import progress
from sitekb.orchestration.progress import (Count, LiveDisplay, LogDisplay, Phase, RunFinished, TaskEnded, TaskError,
                                           TaskStarted, TaskState, Unrunnable, parse_line)

DAG = "sitekb_demo"

BEFORE_THE_FIRST_TASK = [
    "2026-12-02T17:36:07.519825Z [warning  ] Could not import graphviz. Rendering graph to the graphical format "
    "will not be possible. \n",
    "You might need to install the graphviz package and necessary system packages.\n",
    "2026-12-02T17:36:08.231721Z [info     ] DAG bundles loaded: dags-folder "
    "[airflow.dag_processing.bundles.manager.DagBundlesManager] loc=manager.py:304\n",
    "2026-12-02T17:36:08.242539Z [info     ] Filling up the DagBag from /work/main/dags "
    "[airflow.dag_processing.dagbag.BundleDagBag] loc=dagbag.py:460\n",
    "2026-12-02T17:36:09.416989Z [info     ] Bulk-writing dags to db        "
    "[airflow.serialization.definitions.dag] count=2 loc=dag.py:218\n",
    "2026-12-02T17:36:10.085553Z [info     ] Filling up the DagBag from /work/main/dags "
    "[airflow.dag_processing.dagbag.BundleDagBag] loc=dagbag.py:460\n",
    "2026-12-02T17:36:10.348540Z [info     ] creating dag run               "
    "[airflow.serialization.definitions.dag] loc=dag.py:615 logical_date=DateTime(2026, 12, 2, 17, 36, 8, 230561, "
    "tzinfo=Timezone('UTC')) partition_key=None\n",
]


def _task(task: str, started: str, ended: str, state: str = "success", map_index: int = -1) -> list[str]:
    """The lines `dags test` writes for one task instance, as Airflow words them."""
    running = f"sitekb_demo.{task} manual__2026-12-02T17:36:10.074289+00:00" + (
        f" map_index={map_index}" if map_index >= 0 else "")
    return [
        f"{started} [info     ] [DAG TEST] starting task_id={task} map_index={map_index} "
        "[airflow.sdk.definitions.dag] loc=dag.py:1501\n",
        f"{started} [info     ] [DAG TEST] running task <TaskInstance: {running} [TaskInstanceState.SCHEDULED] "
        "ti_id=01a237d4-00a9-7a08-8bc2-d375f99a0110> [airflow.sdk.definitions.dag] loc=dag.py:1504\n",
        f"{started} [info     ] Task started                   "
        "[airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a237d4-2d97-74d1-91ad-fd6c600074b8"
        " hostname=vm loc=task_instances.py:226 previous_state=queued ti_id=01a237d4-00a9-7a08-8bc2-d375f99a0110\n",
        f"{started} [info     ] Task instance state updated    "
        "[airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a237d4-2d97-74d1-91ad-fd6c600074b8"
        " loc=task_instances.py:254 rows_affected=1 ti_id=01a237d4-00a9-7a08-8bc2-d375f99a0110\n",
        f"{ended} [info     ] Task instance state updated    "
        "[airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a237d4-4373-7703-b1f5-1d450abc65cf"
        f" loc=task_instances.py:485 new_state={state} rows_affected=1 ti_id=01a237d4-00a9-7a08-8bc2-d375f99a0110\n",
        f"{ended} [info     ] [DAG TEST] end task task_id={task} map_index={map_index} "
        "[airflow.sdk.definitions.dag] loc=dag.py:1563\n",
    ]


SUCCESSFUL_RUN = [
    *BEFORE_THE_FIRST_TASK,
    *_task("start", "2026-12-02T17:36:10.581603Z", "2026-12-02T17:36:21.866894Z"),
    "2026-12-02T17:36:22.106436Z [info     ] [crawl] fetch the site's pages politely, honouring every opt-out ... "
    "[sitekb.engine] loc=engine.py:121\n",
    *_task("crawl", "2026-12-02T17:36:21.904249Z", "2026-12-02T17:36:27.561464Z"),
    *_task("embed_plan", "2026-12-02T17:36:40.867703Z", "2026-12-02T17:36:41.076856Z"),
    *_task("embed_shard", "2026-12-02T17:36:41.139754Z", "2026-12-02T17:37:15.319475Z", map_index=0),
    *_task("outcome", "2026-12-02T17:37:20.416518Z", "2026-12-02T17:37:20.570297Z"),
    "2026-12-02T17:37:20.582867Z [info     ] Marking run <DagRun sitekb_demo @ 2026-12-02 17:36:08.230561+00:00: "
    "manual__2026-12-02T17:36:10.074289+00:00, state:running, queued_at: None. run_type: manual> successful "
    "[airflow.models.dagrun.DagRun] loc=dagrun.py:1249\n",
    "2026-12-02T17:37:20.585304Z [info     ] DagRun Finished: dag_id=sitekb_demo, logical_date=2026-12-02 "
    "17:36:08.230561+00:00, run_id=manual__2026-12-02T17:36:10.074289+00:00, run_duration=72.35292, state=success, "
    "run_type=manual\n",
]

UNRUNNABLE = (
    "2026-12-02T17:39:29.565468Z [warning  ] No tasks to run. unrunnable tasks: {<TaskInstance: sitekb_demo.embed_shard"
    " manual__2026-12-02T17:39:17.794277+00:00 [None] ti_id=01a237d6-dda7-7056-b737-06ef3968b5f0>, <TaskInstance: "
    "sitekb_demo.chunk manual__2026-12-02T17:39:17.794277+00:00 [None] ti_id=01a237d6-dda5-7d2c-ba84-7d983b5953bc>, "
    "<TaskInstance: sitekb_demo.report manual__2026-12-02T17:39:17.794277+00:00 [None] "
    "ti_id=01a237d6-ddac-7929-8350-f099e1868b66>} [airflow.sdk.definitions.dag] loc=dag.py:1424\n"
)
CRAWL_FAILED = [
    "2026-12-02T17:39:29.101623Z [info     ] [DAG TEST] starting task_id=crawl map_index=-1 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1501\n",
    "2026-12-02T17:39:29.342591Z [error    ] Task failed with exception     [task] loc=task_runner.py:1639\n",
    "Traceback (most recent call last):\n",
    '  File "/work/main/plugins/sitekb/orchestration/tasks.py", line 64, in _terminal_errors\n',
    '    raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc\n',
    "airflow.sdk.exceptions.AirflowFailException: CrawlFailed: the start URL http://127.0.0.1:9/ of site 'demo' is "
    "unreachable ([Errno 111] Connection refused). Check that the site is up and the URL is right\n",
    "2026-12-02T17:39:29.490548Z [info     ] Task instance state updated    "
    "[airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a237d7-0a30-789a-bd30-205eb2342aaf "
    "loc=task_instances.py:485 new_state=failed rows_affected=1 ti_id=01a237d6-dda2-716e-8f11-bcaae590dee5\n",
    "2026-12-02T17:39:29.525604Z [info     ] [DAG TEST] end task task_id=crawl map_index=-1 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1563\n",
    UNRUNNABLE,
    UNRUNNABLE.replace("17:39:29.565468", "17:39:30.599905"),
    *_task("report", "2026-12-02T17:39:37.828307Z", "2026-12-02T17:39:38.198466Z"),
    "2026-12-02T17:39:38.211368Z [info     ] DagRun Finished: dag_id=sitekb_demo, logical_date=2026-12-02 "
    "17:39:16.039158+00:00, run_id=manual__2026-12-02T17:39:17.794277+00:00, run_duration=22.167938, state=failed, "
    "run_type=manual\n",
]


def _at(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(("line", "event"), [
    (BEFORE_THE_FIRST_TASK[3], Phase("parse", at=_at("2026-12-02T17:36:08.242539Z"))),
    (BEFORE_THE_FIRST_TASK[6], Phase("create", at=_at("2026-12-02T17:36:10.348540Z"))),
    (SUCCESSFUL_RUN[7], TaskStarted("start", -1, _at("2026-12-02T17:36:10.581603Z"))),
    (_task("embed_shard", "2026-12-02T17:36:41.139754Z", "x", map_index=0)[0],
     TaskStarted("embed_shard", 0, _at("2026-12-02T17:36:41.139754Z"))),
    (CRAWL_FAILED[6], TaskState("failed", _at("2026-12-02T17:39:29.490548Z"))),
    (CRAWL_FAILED[7], TaskEnded("crawl", -1, _at("2026-12-02T17:39:29.525604Z"))),
    (CRAWL_FAILED[5], TaskError("CrawlFailed: the start URL http://127.0.0.1:9/ of site 'demo' is unreachable "
                                "([Errno 111] Connection refused). Check that the site is up and the URL is right")),
    (UNRUNNABLE, Unrunnable(3, _at("2026-12-02T17:39:29.565468Z"))),
    (CRAWL_FAILED[-1], RunFinished("failed", _at("2026-12-02T17:39:38.211368Z"))),
])
def test_a_line_of_dags_test_output_tells_its_event(line, event):
    assert parse_line(line) == event


@pytest.mark.parametrize("line", [
    BEFORE_THE_FIRST_TASK[0], BEFORE_THE_FIRST_TASK[1], BEFORE_THE_FIRST_TASK[4],
    SUCCESSFUL_RUN[8], SUCCESSFUL_RUN[9],   # "running task", "Task started"
    SUCCESSFUL_RUN[10],                     # the state update when a task starts: no new_state
    SUCCESSFUL_RUN[13],                     # a sitekb log line (the runner relays those itself)
    CRAWL_FAILED[2], CRAWL_FAILED[3], CRAWL_FAILED[4],
])
def test_the_other_lines_tell_nothing(line):
    assert parse_line(line) is None


def test_a_secret_in_a_failed_task_s_reason_is_hidden():
    event = parse_line("psycopg.OperationalError: connection to postgresql://kb:hunter2@db:5432/kb failed\n")
    assert event == TaskError("OperationalError: connection to postgresql://kb:***@db:5432/kb failed")


def _fed(display, lines):
    for line in lines:
        display.feed(line)
    return display


def test_a_successful_run_folds_into_its_tasks_with_their_durations():
    state = _fed(LogDisplay(DAG), SUCCESSFUL_RUN).state
    rows = list(state.tasks.values())
    assert [r.label for r in rows] == ["start", "crawl", "embed_plan", "embed_shard[0]", "outcome"]
    assert {r.state for r in rows} == {"success"}
    assert [round(r.seconds(0), 1) for r in rows] == [11.3, 5.7, 0.2, 34.2, 0.2]
    assert state.current is None and state.outcome == "success"
    # After its last word Airflow takes seconds to exit: that is a phase of its own, not silence.
    assert state.phase == "Airflow: the DAG run is over (success); `airflow dags test` is shutting down"
    display = _fed(LogDisplay(DAG), SUCCESSFUL_RUN)
    display.finish(0)
    assert display.state.phase is None


def test_the_phase_before_the_first_task_is_the_dag_being_parsed_then_its_run_created():
    display = LogDisplay(DAG)
    display.phase("metadata")
    assert display.state.phase == "Airflow: preparing metadata database"
    _fed(display, BEFORE_THE_FIRST_TASK[:4])
    assert display.state.phase == "Airflow: parsing DAG sitekb_demo"
    _fed(display, BEFORE_THE_FIRST_TASK[4:])
    assert display.state.phase == "Airflow: creating the DAG run of sitekb_demo"
    display.feed(SUCCESSFUL_RUN[7])
    assert display.state.phase is None and display.state.current.label == "start"


def test_a_failed_task_keeps_why_and_the_tasks_it_held_back_are_counted():
    display = _fed(LogDisplay(DAG), CRAWL_FAILED[:-7])
    crawl = display.state.tasks[("crawl", -1)]
    assert crawl.state == "failed" and crawl.reason.startswith("CrawlFailed: the start URL http://127.0.0.1:9/")
    assert display.state.phase.startswith("Airflow: waiting on tasks that cannot run yet")
    assert display.state.waiting == 3
    _fed(display, CRAWL_FAILED[-7:])
    assert display.state.tasks[("report", -1)].state == "success"
    assert display.state.waiting == 0 and display.state.outcome == "failed"


def test_a_retried_task_is_one_row_counting_its_tries():
    # Airflow's lines for a try that failed with a retry left (new_state=up_for_retry), then the next try.
    display = _fed(LogDisplay(DAG), [
        *_task("embed", "2026-12-02T17:37:15.370562Z", "2026-12-02T17:37:16.231553Z", state="up_for_retry"),
        UNRUNNABLE,
        *_task("embed", "2026-12-02T17:42:16.282837Z", "2026-12-02T17:42:17.611736Z"),
    ])
    [row] = display.state.tasks.values()
    assert (row.state, row.tries, round(row.seconds(0), 1)) == ("success", 2, 1.3)


def test_an_exit_without_airflow_s_last_word_ends_the_running_task():
    display = _fed(LogDisplay(DAG), SUCCESSFUL_RUN[:8])
    display.finish(1)
    assert display.state.outcome == "failed" and display.state.tasks[("start", -1)].state == "failed"


def test_a_log_gets_a_line_per_phase_and_per_task_start_and_end(caplog):
    display = LogDisplay(DAG)
    with caplog.at_level(logging.INFO, logger="sitekb.orchestration.progress"):
        display.phase("metadata")
        _fed(display, [*BEFORE_THE_FIRST_TASK, *CRAWL_FAILED])
        display.finish(1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["Airflow: preparing metadata database ...", "Airflow: parsing DAG sitekb_demo ...",
                            "Airflow: creating the DAG run of sitekb_demo ..."]
    assert "task crawl started" in messages
    assert any(m.startswith("task crawl failed in 0.4s: CrawlFailed: the start URL") for m in messages)
    assert sum(m.startswith("Airflow: waiting on tasks") for m in messages) == 1  # repeated lines: once
    assert "task report success in 0.4s" in messages
    assert messages[-1].startswith("DAG run of sitekb_demo: failed in ")


def _screen(display: LiveDisplay, now: float, width: int = 110) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system=None, width=width).print(display.render(now=now))
    return out.getvalue()


def _live() -> LiveDisplay:
    return LiveDisplay(DAG, console=Console(file=io.StringIO(), force_terminal=True))


def test_the_live_view_shows_the_phase_with_its_elapsed_seconds():
    display = _fed(_live(), BEFORE_THE_FIRST_TASK[:4])
    screen = _screen(display, now=_at("2026-12-02T17:36:12.242539Z"))
    assert "Airflow: parsing DAG sitekb_demo" in screen and "4.0s" in screen


def test_the_live_view_shows_each_task_and_a_bar_on_the_running_long_stage():
    display = _fed(_live(), SUCCESSFUL_RUN[:28])
    assert display.state.current.label == "embed_shard[0]"
    display.count(Count("embed", 120, 240, "texts"))
    screen = _screen(display, now=_at("2026-12-02T17:36:51.139754Z"))
    rows = {line.split()[1]: line for line in screen.splitlines()[1:]}
    assert "success" in rows["start"] and "11.3s" in rows["start"]
    assert "success" in rows["crawl"] and "5.7s" in rows["crawl"]
    running = rows["embed_shard[0]"]
    assert "running" in running and "10.0s" in running and "120/240 texts" in running
    assert "━" in running
    assert "sitekb_demo running embed_shard[0]" in screen.splitlines()[0]


def test_a_finished_task_keeps_its_last_count_and_the_finished_view_points_at_the_log(tmp_path):
    display = LiveDisplay(DAG, tmp_path / "last_dag_test.log", console=Console(file=io.StringIO()))
    _fed(display, SUCCESSFUL_RUN[:15])   # crawl is running
    display.count(Count("crawl", 51, None, "pages seen"))
    _fed(display, SUCCESSFUL_RUN[15:])
    display.finish(0)
    screen = _screen(display, now=0)
    assert "51 pages seen" in screen and "━" not in screen
    assert screen.splitlines()[0].split()[1:3] == ["sitekb_demo", "success"]
    assert f"Airflow's whole output: {tmp_path / 'last_dag_test.log'}" in screen


def test_a_long_failure_reason_is_cut_to_the_terminal_not_the_task_column():
    display = _fed(_live(), [*BEFORE_THE_FIRST_TASK, *CRAWL_FAILED])
    display.finish(1)
    lines = _screen(display, now=0, width=80).splitlines()
    crawl = next(line for line in lines if " crawl " in line)
    assert len(crawl) <= 80 and "failed" in crawl and "CrawlFailed: the start URL" in crawl


def test_the_live_view_draws_on_stderr_and_leaves_stdout_alone(capsys):
    with LiveDisplay(DAG, console=Console(stderr=True, force_terminal=True)) as display:
        display.phase("metadata")
        _fed(display, SUCCESSFUL_RUN)
        display.finish(0)
    out, err = capsys.readouterr()
    assert out == ""
    assert "sitekb_demo" in err and "embed_shard[0]" in err


def test_the_database_counts_only_the_long_stages():
    assert progress.MEASURED == {"crawl": "crawl", "embed_shard": "embed", "embed": "embed"}
    display = _fed(LogDisplay(DAG), SUCCESSFUL_RUN[:8])
    assert display.measured_stage() is None     # start
    display.feed(SUCCESSFUL_RUN[12])            # start ended
    display.feed(SUCCESSFUL_RUN[14])            # crawl started
    assert display.measured_stage() == "crawl"


def test_the_live_view_says_how_many_tasks_cannot_run_yet_after_a_failure():
    display = _fed(_live(), [*BEFORE_THE_FIRST_TASK, *CRAWL_FAILED[:9]])
    header, *rows = _screen(display, now=_at("2026-12-02T17:39:31.565468Z"), width=140).splitlines()
    assert "Airflow: 3 tasks cannot run yet" in header and header.endswith("2.0s")
    assert rows[0].split()[:4] == ["✗", "crawl", "failed", "0.4s"] and "CrawlFailed: the start URL" in rows[0]
