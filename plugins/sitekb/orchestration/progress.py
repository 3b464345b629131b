"""What a DAG run under ``airflow dags test`` is doing, shown to the person who started it.

``sitekb run SITE --engine airflow`` runs the site's DAG in an ``airflow dags
test`` subprocess (:func:`sitekb.orchestration.runner.run_dag`), so the
``progress`` callback a stage is given in-process cannot reach the CLI. Two
sources can, without a change to any task:

- **Airflow's output**, read line by line as ``dags test`` writes it (one
  process, tasks one after another): the phase before the first task
  ("Filling up the DagBag", "creating dag run"), and for each task instance
  ``[DAG TEST] starting task_id=T map_index=M``, then ``Task instance state
  updated ... new_state=S``, then ``[DAG TEST] end task``; the last line of a
  traceback says why a task failed, and "No tasks to run. unrunnable tasks:
  {...}" lists the tasks an upstream failure (or a retry's delay) holds back.
  :func:`parse_line` turns such a line into an event and :class:`DagRunState`
  folds the events. A line it does not know changes nothing: an Airflow that
  words a line differently loses a detail of the display, never the run.
- **sitekb's database**, for how far the long stages have come. The crawler
  commits its pages in batches and the embedder commits each request's
  vectors as it returns, so counting the run's rows (pages seen; distinct
  chunk texts that have a vector of the run's model) is right across
  processes, mapped shards and retries. :class:`Poller` counts them every two
  seconds, from a thread and a connection of its own, while a crawl or embed
  task runs, for the live display only.

A progress line in the task log was the other way: it would need every stage
to log more, a log level or handler (or a change in Airflow's format) can lose
it, and the crawl runs in a Scrapy subprocess whose output is not streamed.

On a terminal :class:`LiveDisplay` draws (with rich) the phase and its elapsed
seconds, a row per task with its state and duration, and a bar with done/total
on the running crawl or embed task. Elsewhere (CI, a pipe, ``make run`` logs)
:class:`LogDisplay` logs one line per phase and one when each task starts and
ends. Neither writes to stdout, so ``--json`` stays parseable.

Settings read: none (the runner passes the DAG id, the database URL and the site).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from sitekb.redaction import redact

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# The tasks whose progress the database can tell, and under which stage's count.
MEASURED = {"crawl": "crawl", "embed_shard": "embed", "embed": "embed"}

_PHASES = {
    "metadata": "Airflow: preparing metadata database",
    "sitekb": "sitekb: preparing its database",
    "launch": "Airflow: starting `airflow dags test {dag}`",
    "parse": "Airflow: parsing DAG {dag}",
    "create": "Airflow: creating the DAG run of {dag}",
    "settle": "Airflow: waiting on tasks that cannot run yet (an empty map, a failed upstream task, a retry's delay)",
    "exit": "Airflow: the DAG run is over ({detail}); `airflow dags test` is shutting down",
}

# -- Airflow's output, line by line ------------------------------------------

_AT = re.compile(r"^(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?)\s")
_STARTING = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+) map_index=(?P<map>-?\d+)")
_ENDED = re.compile(r"\[DAG TEST\] end task task_id=(?P<task>\S+) map_index=(?P<map>-?\d+)")
_NEW_STATE = re.compile(r"Task instance state updated\b.*\bnew_state=(?P<state>\w+)")
_UNRUNNABLE = re.compile(r"No tasks to run\. unrunnable tasks: (?P<tasks>.*)")
_RUN_FINISHED = re.compile(r"DagRun Finished: .*?\bstate=(?P<state>\w+)")
# The last line of a traceback (no timestamp): "airflow.sdk.exceptions.AirflowFailException: CrawlFailed: ..."
_EXCEPTION = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:Exception|Error|Failed|Exceeded)): (?P<message>\S.*)$")


@dataclass(frozen=True)
class Phase:
    kind: str            # a key of _PHASES
    detail: str = ""
    at: float | None = None


@dataclass(frozen=True)
class TaskStarted:
    task_id: str
    map_index: int
    at: float | None = None


@dataclass(frozen=True)
class TaskState:
    state: str           # Airflow's: success, failed, skipped, up_for_retry, deferred, ...
    at: float | None = None
    recorded: bool = True   # False: inferred ("Error running task"); a state Airflow recorded stands


@dataclass(frozen=True)
class TaskError:
    reason: str
    at: float | None = None


@dataclass(frozen=True)
class TaskEnded:
    task_id: str
    map_index: int
    at: float | None = None


@dataclass(frozen=True)
class Unrunnable:
    tasks: int           # how many task instances Airflow cannot run yet
    at: float | None = None


@dataclass(frozen=True)
class RunFinished:
    state: str
    at: float | None = None


Event = Phase | TaskStarted | TaskState | TaskError | TaskEnded | Unrunnable | RunFinished


def parse_line(line: str) -> Event | None:
    """The event one line of ``airflow dags test`` output tells, or None (most lines tell nothing here)."""
    line = line.rstrip("\n")
    stamp = _AT.match(line)
    if stamp is None:
        found = _EXCEPTION.match(line)
        if found is None:
            return None
        name, message = found["name"], found["message"].strip()
        # sitekb's tasks wrap their errors (tasks._terminal_errors): the message is "CrawlFailed: ...".
        reason = message if name.endswith("AirflowFailException") else f"{name.rsplit('.', 1)[-1]}: {message}"
        return TaskError(redact(reason))
    at = _timestamp(stamp["at"])
    if found := _STARTING.search(line):
        return TaskStarted(found["task"], int(found["map"]), at)
    if found := _ENDED.search(line):
        return TaskEnded(found["task"], int(found["map"]), at)
    if found := _NEW_STATE.search(line):
        return TaskState(found["state"].lower(), at)
    if "[DAG TEST] running trigger in line" in line:
        return TaskState("deferred", at)
    if "[DAG TEST] Error running task" in line:
        return TaskState("failed", at, recorded=False)
    if found := _UNRUNNABLE.search(line):
        return Unrunnable(found["tasks"].count("<TaskInstance: "), at)
    if found := _RUN_FINISHED.search(line):
        return RunFinished(found["state"].lower(), at)
    if "Filling up the DagBag from" in line:
        return Phase("parse", at=at)
    if "creating dag run" in line:
        return Phase("create", at=at)
    return None


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- the state of the DAG run ------------------------------------------------

@dataclass
class TaskRow:
    """One task instance as the display shows it."""

    task_id: str
    map_index: int
    started: float | None
    state: str = "running"
    ended: float | None = None
    tries: int = 1
    reason: str = ""     # why it failed (a traceback's last line)
    note: str = ""       # the last count of its stage while it ran ("51 pages", "240/240 texts")

    @property
    def label(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"

    def seconds(self, now: float) -> float | None:
        if self.started is None:
            return None
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)


@dataclass(frozen=True)
class Count:
    """How far a long stage has come, as the database has it (``total`` None: not known beforehand)."""

    stage: str
    done: int
    total: int | None
    unit: str

    def text(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"


@dataclass
class DagRunState:
    """One ``dags test`` run folded from its events: the phase, each task instance, the counts, the outcome."""

    dag_id: str
    started: float = field(default_factory=time.time)
    phase: str | None = None
    phase_started: float | None = None
    tasks: dict[tuple[str, int], TaskRow] = field(default_factory=dict)
    current: TaskRow | None = None
    waiting: int = 0     # task instances Airflow cannot run yet (an empty map, a failed upstream, a retry)
    counts: dict[str, Count] = field(default_factory=dict)
    outcome: str | None = None
    ended: float | None = None

    def set_phase(self, kind: str, detail: str = "", at: float | None = None) -> bool:
        """Enter a phase; True when its text is new (a repeated line changes nothing)."""
        text = _PHASES[kind].format(dag=self.dag_id, detail=detail)
        if text == self.phase:
            return False
        self.phase, self.phase_started = text, at if at is not None else time.time()
        return True

    def apply(self, event: Event) -> TaskRow | None:
        """Fold one event in; return the task row it started or ended (None for other events)."""
        at = event.at if event.at is not None else time.time()
        if isinstance(event, Phase):
            self.set_phase(event.kind, event.detail, at)
        elif isinstance(event, TaskStarted):
            row = self.tasks.get((event.task_id, event.map_index))
            if row is None:
                row = self.tasks[(event.task_id, event.map_index)] = TaskRow(event.task_id, event.map_index, at)
            else:  # a retry: the same task instance again
                row.tries, row.started, row.ended, row.state, row.reason = row.tries + 1, at, None, "running", ""
            self.current, self.phase, self.waiting = row, None, 0
            return row
        elif isinstance(event, TaskState):
            row = self.current
            if row is not None and row.ended is None and (event.recorded or row.state in ("running", "deferred")):
                row.state = event.state
        elif isinstance(event, TaskError):
            if self.current is not None and self.current.ended is None:
                self.current.reason = event.reason
        elif isinstance(event, TaskEnded):
            row = self.tasks.get((event.task_id, event.map_index)) or self.current
            if row is None:
                return None
            row.ended = at
            if row.state in ("running", "deferred"):
                row.state = "ended"
            if row is self.current:
                self.current = None
            return row
        elif isinstance(event, Unrunnable):
            self.waiting = event.tasks
            self.set_phase("settle", at=at)
        elif isinstance(event, RunFinished):
            self.outcome = event.state
            self.set_phase("exit", event.state, at)   # it takes Airflow some seconds more to exit
        return None

    def finish(self, returncode: int, at: float | None = None) -> None:
        """The process ended: the outcome (from Airflow's last word, or the exit code)."""
        self.ended = at if at is not None else time.time()
        if self.outcome is None:
            self.outcome = "failed" if returncode else "ended"
        if self.current is not None and self.current.ended is None:
            self.current.ended = self.ended
            self.current.state = "failed" if returncode else "ended"
        self.current, self.phase, self.waiting = None, None, 0

    def measured_stage(self) -> str | None:
        """The stage whose count the database can tell, while its task runs."""
        return MEASURED.get(self.current.task_id) if self.current is not None else None


# -- displays ----------------------------------------------------------------

class Display:
    """Fed the runner's own steps, every output line of ``dags test`` and the database's counts."""

    def __init__(self, dag_id: str, log_path: Path | None = None) -> None:
        self.state = DagRunState(dag_id)
        self.log_path = log_path
        self._lock = threading.Lock()   # the poller and rich's refresh thread read what the reader writes

    def __enter__(self) -> "Display":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def phase(self, kind: str) -> None:
        """A step of the runner before the first task (a key of the phases: metadata, sitekb, launch)."""
        with self._lock:
            changed = self.state.set_phase(kind)
        if changed:
            self._phase_changed(self.state.phase)

    def feed(self, line: str) -> None:
        """One line of ``airflow dags test`` output."""
        event = parse_line(line)
        if event is None:
            return
        with self._lock:
            before = self.state.phase
            row = self.state.apply(event)
            phase = self.state.phase
        if isinstance(event, TaskStarted):
            self._task_started(row)
        elif isinstance(event, TaskEnded) and row is not None:
            self._task_ended(row)
        elif phase is not None and phase != before:
            self._phase_changed(phase)

    def count(self, count: Count) -> None:
        """How far a stage has come (from :class:`Poller`)."""
        with self._lock:
            self.state.counts[count.stage] = count
            current = self.state.current
            if current is not None and current.ended is None and MEASURED.get(current.task_id) == count.stage:
                current.note = count.text()

    def measured_stage(self) -> str | None:
        with self._lock:
            return self.state.measured_stage()

    def finish(self, returncode: int) -> None:
        """The ``dags test`` process exited with ``returncode``."""
        with self._lock:
            self.state.finish(returncode)
        self._finished()

    def _phase_changed(self, text: str) -> None:
        pass

    def _task_started(self, row: TaskRow) -> None:
        pass

    def _task_ended(self, row: TaskRow) -> None:
        pass

    def _finished(self) -> None:
        pass


class LogDisplay(Display):
    """Plain log lines: each phase once, each task as it starts and ends, and the outcome."""

    def _phase_changed(self, text: str) -> None:
        log.info("%s ...", text)

    def _task_started(self, row: TaskRow) -> None:
        log.info("task %s started%s", row.label, f" (try {row.tries})" if row.tries > 1 else "")

    def _task_ended(self, row: TaskRow) -> None:
        log.info("task %s %s in %.1fs%s", row.label, row.state, row.seconds(time.time()) or 0.0,
                 f": {row.reason}" if row.reason else "")

    def _finished(self) -> None:
        state = self.state
        log.info("DAG run of %s: %s in %.0fs%s", state.dag_id, state.outcome, state.ended - state.started,
                 f"; Airflow's whole output is in {self.log_path}" if self.log_path else "")


_STYLES = {"success": "green", "failed": "red", "upstream_failed": "red", "up_for_retry": "yellow",
           "running": "cyan", "deferred": "cyan", "skipped": "dim"}
_ICONS = {"success": "✓", "failed": "✗", "upstream_failed": "✗", "up_for_retry": "↻", "skipped": "-"}


class LiveDisplay(Display):
    """A live view on a terminal (stderr): the phase, a row per task, a bar on the running long stage."""

    def __init__(self, dag_id: str, log_path: Path | None = None, *, console: Console | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(dag_id, log_path)
        self.console = console or Console(stderr=True)
        self.clock = clock
        self._live: Live | None = None
        self._spinners: dict[object, Spinner] = {}   # one each, so that it turns from frame to frame

    def __enter__(self) -> "LiveDisplay":
        # stdout is left alone: `--json` prints there once the run is over. sitekb's log lines (stderr) go above.
        self._live = Live(console=self.console, get_renderable=self.render, refresh_per_second=4,
                          redirect_stdout=False, redirect_stderr=True)
        self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()   # the last frame stays: every task with its state and duration
            self._live = None

    def render(self, now: float | None = None) -> RenderableType:
        """The view as it stands (``now``: the clock for elapsed seconds; tests pass one)."""
        now = self.clock() if now is None else now
        with self._lock:
            state = self.state
            rows = Table.grid(padding=(0, 1), expand=True)
            rows.add_column(width=1)                                                   # icon
            rows.add_column(no_wrap=True, min_width=max([len(r.label) for r in state.tasks.values()] or [0]))
            rows.add_column(no_wrap=True, min_width=len("up for retry"))              # state
            rows.add_column(no_wrap=True, min_width=len("1000.0s"), justify="right")  # duration
            rows.add_column(no_wrap=True, overflow="ellipsis", ratio=1)               # bar, counts, why it failed
            for key, row in state.tasks.items():
                running = row.ended is None
                count = state.counts.get(MEASURED.get(row.task_id, "")) if running else None
                icon = self._spinner(key) if running else Text(_ICONS.get(row.state, "·"),
                                                                style=_STYLES.get(row.state, ""))
                note = row.reason or (count.text() if count is not None else row.note)
                if row.tries > 1:
                    note = f"try {row.tries}" + (f"; {note}" if note else "")
                detail: RenderableType = Text(note, style="red" if row.reason else "dim")
                if count is not None:
                    detail = Table.grid(padding=(0, 1))
                    detail.add_column(width=_BAR_WIDTH)
                    detail.add_column(no_wrap=True, overflow="ellipsis")
                    detail.add_row(ProgressBar(total=count.total, completed=count.done, width=_BAR_WIDTH,
                                               pulse=count.total is None, animation_time=now), note)
                rows.add_row(icon, row.label, _state_text(row.state), _seconds_text(row.seconds(now)), detail)
            parts: list[RenderableType] = [self._header(now)]
            if state.tasks:
                parts.append(rows)
            if state.ended is not None and self.log_path is not None:
                parts.append(Text(f"  Airflow's whole output: {self.log_path}", style="dim"))
        return Group(*parts)

    def _header(self, now: float) -> Table:
        state = self.state
        line = Table.grid(padding=(0, 1))
        line.add_column(width=1)
        line.add_column(no_wrap=True, overflow="ellipsis")
        line.add_column(no_wrap=True, justify="right")
        if state.ended is not None:
            outcome = state.outcome or ""
            line.add_row(Text(_ICONS.get(outcome, "·"), style=_STYLES.get(outcome, "")),
                         Text.assemble((state.dag_id, "bold"), " ", _state_text(outcome)),
                         _seconds_text(state.ended - state.started))
        elif state.phase is not None:
            phase = state.phase
            if state.waiting:
                phase = (f"Airflow: {state.waiting} tasks cannot run yet "
                         "(an empty map, a failed upstream task, a retry's delay)")
            line.add_row(self._spinner("phase"), Text(phase, style="bold"),
                         _seconds_text(now - (state.phase_started or now)))
        else:
            done = len(state.tasks)
            doing = (f"running {state.current.label}" if state.current is not None
                     else f"{done} task{'' if done == 1 else 's'} done")
            line.add_row(self._spinner("phase"), Text.assemble((state.dag_id, "bold"), f" {doing}"),
                         _seconds_text(now - state.started))
        return line

    def _spinner(self, key: object) -> Spinner:
        if key not in self._spinners:
            self._spinners[key] = Spinner("dots", style="cyan")
        return self._spinners[key]


_BAR_WIDTH = 28


def _state_text(state: str) -> Text:
    return Text(state.replace("_", " "), style=_STYLES.get(state, ""))


def _seconds_text(seconds: float | None) -> Text:
    return Text("" if seconds is None else f"{seconds:.1f}s", justify="right")


# -- counts from sitekb's database ---------------------------------------------

def measure(conn: "psycopg.Connection", site: str, run_id: str, stage: str, embedding: dict) -> Count | None:
    """How far ``stage`` of the run has come: pages the crawl has written, texts that have a vector."""
    from sitekb.store import embeddings, pages

    if stage == "crawl":
        return Count("crawl", int(pages.run_totals(conn, site, run_id)["pages_seen"]), None, "pages seen")
    if stage == "embed" and embedding.get("model") and embedding.get("dimensions"):
        total = embeddings.distinct_texts(conn, run_id)
        missing, _ = embeddings.missing_totals(conn, run_id, embedding["model"], int(embedding["dimensions"]))
        return Count("embed", total - missing, total, "texts")
    return None


class Poller:
    """Counts from sitekb's database while a crawl or embed task runs (a thread and a connection of its own).

    The run is the site's first one started after ``since`` (the DAG run's ``start`` task records it). A
    database that cannot be reached stops the counting, never the run.
    """

    def __init__(self, display: Display, database_url: str, site: str, since: datetime, interval: float = 2.0):
        self.display, self.database_url, self.site, self.since = display, database_url, site, since
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sitekb-dag-progress", daemon=True)
        self._run_id: str | None = None
        self._embedding: dict = {}

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        import psycopg

        from sitekb import store
        from sitekb.errors import DatabaseUnavailable

        try:
            with store.connection(self.database_url) as conn:
                while not self._stop.wait(self.interval):
                    stage = self.display.measured_stage()
                    if stage is not None and self._find_run(conn):
                        count = measure(conn, self.site, self._run_id, stage, self._embedding)
                        if count is not None:
                            self.display.count(count)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            # The task reaches the database on its own, and the run's outcome is read after it.
            log.debug("no progress counts from the database: %s", exc)

    def _find_run(self, conn: "psycopg.Connection") -> bool:
        from sitekb.store import runs

        if self._run_id is None:
            self._run_id = runs.started_since(conn, self.site, self.since)
            if self._run_id is not None:
                self._embedding = runs.load(conn, self._run_id).embedding or {}
        return self._run_id is not None
