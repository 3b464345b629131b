"""A live Airflow 3 on 127.0.0.1 for tests, and a small REST client to drive it.

:class:`LiveAirflow` starts the API server, scheduler, DAG processor and
triggerer as separate processes (each in its own process group) with:

- its own ``AIRFLOW_HOME`` (a temporary folder) and SQLite metadata database;
- the LocalExecutor with ``parallelism`` 2 (two cores on the test machines);
- a DAGs folder (default the repository's ``dags/``; the ``live_airflow`` fixture gives it a
  copy) and the repository's ``plugins/`` folder, as ``sitekb run --engine airflow`` does
  (:func:`sitekb.orchestration.runner.airflow_env` is the base of the environment), so the
  sitekb plugin loads once, through its entry point, exactly as in production;
- the simple auth manager with users ``admin`` (role ADMIN) and ``viewer``
  (role VIEWER), their passwords in :data:`PASSWORDS` via a passwords file;
- the API server on a free port of 127.0.0.1, and the execution API URL pointing at it;
- ``SITEKB_DATABASE_URL`` of the sitekb database given (the tests' embedded Postgres).

It waits until ``/api/v2/monitor/health`` reports every component healthy and
stops every process group on :meth:`LiveAirflow.stop` (also at interpreter
exit, should a test run be interrupted). Each process writes to
``$AIRFLOW_HOME/logs/<process>.out``; a failure to start or a run that times
out raises :class:`LiveAirflowError` with the tails of those files.

The scheduler and triggerer start without their log servers (those would listen on
every interface): every process writes task logs to the one local log folder, which
the API server reads. The DAG processor looks for new files every 5 s and parses each
file every 10 s, so a DAG file a test writes shows up within seconds.

The client, all as ``admin`` unless ``user=`` says otherwise:

- :meth:`~LiveAirflow.rest` ``(method, path, json=None, user="admin", **httpx_kwargs)``: the JSON
  answer, :class:`APIError` (with ``status`` and ``body``) on a non-2xx one;
  :meth:`~LiveAirflow.request`: the same call, the raw ``httpx.Response``;
  :meth:`~LiveAirflow.token`: a JWT from ``POST /auth/token`` (cached per user);
- :meth:`~LiveAirflow.wait_for_dag`, :meth:`~LiveAirflow.unpause`, :meth:`~LiveAirflow.trigger`
  ``(dag_id, conf)``, :meth:`~LiveAirflow.wait_for_run` ``(dag_id, run_id, timeout)``,
  :meth:`~LiveAirflow.task_instances` ``(dag_id, run_id)``, :meth:`~LiveAirflow.task_log`
  (text; :meth:`~LiveAirflow.task_log_events` for the structured events);
- :meth:`~LiveAirflow.cli` runs the ``airflow`` command with the same environment,
  :attr:`~LiveAirflow.env`; :attr:`~LiveAirflow.base_url`, :attr:`~LiveAirflow.home`,
  :meth:`~LiveAirflow.log_tail`.

``tests/airflow_live/conftest.py`` has the session fixture ``live_airflow``. A LiveAirflow
starts once: after :meth:`~LiveAirflow.stop`, make a new one.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from sitekb.orchestration.runner import airflow_env
from sitekb.settings import DEFAULT_DAGS_FOLDER, Settings

# username -> password (known, so tests and people can log in).
PASSWORDS = {"admin": "admin", "viewer": "viewer"}
USERS = "admin:admin,viewer:viewer"   # username:role (ADMIN, VIEWER) of the simple auth manager
# The scheduler's and triggerer's log servers would listen on every interface: every process writes
# its task logs to the one local log folder, which the API server reads directly.
PROCESSES = {"api-server": [], "scheduler": ["--skip-serve-logs"], "dag-processor": [],
             "triggerer": ["--skip-serve-logs"]}
FINISHED = frozenset({"success", "failed"})
AIRFLOW = str(Path(sys.executable).parent / "airflow")


class LiveAirflowError(RuntimeError):
    """Airflow did not start, stopped, or a run did not finish in time (the message has the log tails)."""


class APIError(RuntimeError):
    """A REST call answered with a status outside 2xx."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status, self.body = status, body
        super().__init__(f"{method} {path} -> {status}: {body}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveAirflow:
    """Airflow 3 running in subprocesses for the length of a with-block (or start() ... stop())."""

    # The parts /api/v2/monitor/health must report healthy before the tests start.
    components: tuple[str, ...] = ("metadatabase", "scheduler", "triggerer", "dag_processor")

    def __init__(self, home: Path, database_url: str, *, dags_folder: Path = DEFAULT_DAGS_FOLDER,
                 extra_env: Mapping[str, str] | None = None, parallelism: int = 2, port: int | None = None):
        self.home = Path(home)
        self.database_url = database_url
        self.dags_folder = Path(dags_folder)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.parallelism = parallelism
        self.env = self._environment(dict(extra_env or {}))
        self.processes: dict[str, subprocess.Popen] = {}
        self._tokens: dict[str, str] = {}
        self._http = httpx.Client(base_url=self.base_url, timeout=60)

    # -- environment ----------------------------------------------------------

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        passwords = self.home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps(PASSWORDS), encoding="utf-8")
        # The same environment `sitekb run --engine airflow` gives Airflow, plus what a server needs.
        settings = Settings(home=self.home / "sitekb", airflow_home=self.home, dags_folder=self.dags_folder,
                            environment=dict(os.environ))
        env = airflow_env(settings, self.database_url)
        from cryptography.fernet import Fernet

        env.update({
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            # Shared by every process: tokens the API server signs are checked by the others.
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # A new DAG file shows up within seconds, not the default five minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        })
        env.update(extra)
        return env

    # -- processes ------------------------------------------------------------

    def start(self, timeout: float = 300) -> "LiveAirflow":
        """Migrate the metadata database, start every process and wait until all are healthy."""
        self.cli("db", "migrate", timeout=timeout)
        atexit.register(self.stop)
        try:
            for name, args in PROCESSES.items():
                with open(self.home / "logs" / f"{name}.out", "ab") as out:
                    self.processes[name] = subprocess.Popen([AIRFLOW, name, *args], env=self.env, cwd=self.home,
                                                            stdout=out, stderr=subprocess.STDOUT,
                                                            start_new_session=True)
            self._wait_healthy(time.monotonic() + timeout)
        except BaseException:
            self.stop()   # a with-block does not call __exit__ when __enter__ raises
            raise
        return self

    def _wait_healthy(self, deadline: float) -> None:
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self._http.get("/api/v2/monitor/health").json()
                if all((last.get(part) or {}).get("status") == "healthy" for part in self.components):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        raise LiveAirflowError(f"Airflow was not healthy in time (last health: {last})\n{self.log_tail()}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise LiveAirflowError(f"airflow {name} exited with {process.returncode}\n{self.log_tail(name)}")

    def stop(self, grace: float = 20) -> None:
        """Stop every process group (SIGTERM, then SIGKILL after ``grace`` seconds). Safe to call twice."""
        for process in self.processes.values():
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Task processes the executor forked stay in the group after its leader exits.
            signal_group(process, signal.SIGKILL)
            process.wait()
        self.processes.clear()
        self._http.close()
        atexit.unregister(self.stop)

    def __enter__(self) -> "LiveAirflow":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``airflow ARGS`` with this Airflow's environment; raise LiveAirflowError if it fails and ``check``."""
        result = subprocess.run([AIRFLOW, *args], env=self.env, cwd=self.home, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise LiveAirflowError(f"`airflow {' '.join(args)}` failed ({result.returncode}):\n"
                                   + tail(result.stdout + "\n" + result.stderr))
        return result

    def log_tail(self, process: str | None = None, lines: int = 40) -> str:
        """The last lines of one process's output, or of every process's."""
        names = [process] if process else list(PROCESSES)
        parts = []
        for name in names:
            path = self.home / "logs" / f"{name}.out"
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no output)"
            parts.append(f"--- {name} ({path}) ---\n{tail(text, lines)}")
        return "\n".join(parts)

    # -- the REST API ---------------------------------------------------------

    def token(self, user: str = "admin") -> str:
        """A JWT for ``user`` from ``POST /auth/token`` (cached per user)."""
        if user not in self._tokens:
            answer = self._http.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
            if answer.status_code != 201:
                raise APIError("POST", "/auth/token", answer.status_code, answer.text)
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def request(self, method: str, path: str, json: Any = None, user: str | None = "admin",
                **kwargs: Any) -> httpx.Response:
        """One call as ``user`` (None: without a token); ``kwargs`` go to httpx (params, headers, ...)."""
        headers = dict(kwargs.pop("headers", None) or {})
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        return self._http.request(method, path, json=json, headers=headers, **kwargs)

    def rest(self, method: str, path: str, json: Any = None, user: str | None = "admin", **kwargs: Any) -> Any:
        """One call as ``user``; the JSON answer (None when empty), APIError unless 2xx."""
        answer = self.request(method, path, json=json, user=user, **kwargs)
        try:
            body = answer.json() if answer.content else None
        except ValueError:
            body = answer.text
        if not answer.is_success:
            raise APIError(method, path, answer.status_code, body)
        return body

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        """The DAG once the DAG processor has parsed it (LiveAirflowError with the import errors if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                return self.rest("GET", f"/api/v2/dags/{dag_id}")
            except APIError as exc:
                if exc.status != 404:
                    raise
            time.sleep(1)
        errors = self.rest("GET", "/api/v2/importErrors").get("import_errors", [])
        raise LiveAirflowError(f"DAG {dag_id} was not parsed in {timeout:.0f}s; import errors: {errors}\n"
                               + self.log_tail("dag-processor"))

    def unpause(self, dag_id: str) -> dict:
        return self.rest("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, run_id: str | None = None,
                note: str | None = None) -> dict:
        """Start a manual run of ``dag_id`` (no logical date); its ``dag_run_id`` is in the answer."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self.rest("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        """The DAG run once it succeeded or failed; LiveAirflowError with its task states if it did not finish."""
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            self._check_alive()
            run = self.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED:
                return run
            time.sleep(1)
        states = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
        raise LiveAirflowError(f"run {dag_id}/{run_id} is still {run.get('state')} after {timeout:.0f}s; "
                               f"tasks: {states}\n{self.log_tail('scheduler')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The run's task instances (mapped ones each with their ``map_index``)."""
        return self.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                         params={"limit": 1000})["task_instances"]

    def task_log_events(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1,
                        map_index: int = -1) -> list[dict]:
        """One task try's log: structured events (``event``, ``timestamp``, ``level``, ``logger``, ...)."""
        body = self.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                         params={"map_index": map_index, "full_content": True})
        return [event if isinstance(event, dict) else {"event": event} for event in body["content"]]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """One task try's log as text, a line per event: ``timestamp [level] event [logger]``."""
        return "\n".join(
            f"{e.get('timestamp') or ''} [{e.get('level') or ''}] {e['event']}"
            + (f" [{e['logger']}]" if e.get("logger") else "")
            for e in self.task_log_events(dag_id, run_id, task_id, try_number, map_index))

def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process's whole group (it was started in a session of its own)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])
