"""Airflow 3 on the CeleryExecutor on 127.0.0.1 for tests: Redis, Postgres metadata, two workers.

:class:`Redis` runs Debian's ``redis-server`` on a free port of 127.0.0.1 (no
persistence, in the foreground of its own process group): the Celery broker.

:class:`CeleryAirflow` is :class:`tests.airflow_live.harness.LiveAirflow` (its
environment, REST client and process handling) with what a distributed Airflow
has instead:

- the metadata database and the Celery result backend in Postgres (a database
  of its own, ``metadata_url``; SQLAlchemy with psycopg 3 over the embedded
  server's Unix socket: ``postgresql+psycopg://user:@/db?host=/socket/dir``);
- the CeleryExecutor with Redis as the broker;
- the API server, scheduler and DAG processor (no triggerer: the DAG under test
  defers nothing), then :data:`WORKERS` Celery workers (``airflow celery
  worker``), each with ``concurrency`` slots, its own Celery node name and its
  own Airflow hostname (:mod:`tests.distributed.hostname`), so a task
  instance's ``hostname`` says which worker ran it;
- the workers' log servers are off (``--skip-serve-logs``): every process
  shares one log folder, so the API server reads task logs from disk.

Every process writes to ``$AIRFLOW_HOME/logs/<process>.out``;
:meth:`CeleryAirflow.log_tail` returns the tails of all of them (the test
prints them when it fails). :meth:`CeleryAirflow.stop` stops every process
group, workers first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


from tests.airflow_live.harness import AIRFLOW, LiveAirflow, LiveAirflowError, signal_group, tail, free_port
from tests.distributed import hostname

REPO = Path(__file__).resolve().parents[2]
SERVERS = ("api-server", "scheduler", "dag-processor")
WORKERS = ("sitekb-worker-1", "sitekb-worker-2")
# What a Celery worker prints once it consumes its queue.
WORKER_READY = " ready."


def redis_server() -> str | None:
    """The path of Debian's redis-server, or None when it is not installed."""
    return shutil.which("redis-server")


class Redis:
    """``redis-server`` on a free port of 127.0.0.1 for a with-block: no persistence, no daemon."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.folder / "redis.out"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "Redis":
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(self.folder)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LiveAirflowError(f"redis-server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.1)
        raise LiveAirflowError(f"redis-server did not answer PING in {timeout:.0f}s:\n{self.log_tail()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else "(no output)"
        return f"--- redis-server ({self.log}) ---\n{tail(text, lines)}"

    def stop(self) -> None:
        if self.process is not None:
            signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                signal_group(self.process, signal.SIGKILL)
                self.process.wait()
            self.process = None
        atexit.unregister(self.stop)

    def __enter__(self) -> "Redis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def database_url(server_url: str, database: str, driver: str | None = None) -> str:
    """``server_url`` (a libpq URL, socket dir in ``?host=``) naming ``database``, with a SQLAlchemy driver if given."""
    parts = urlsplit(server_url)
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


class CeleryAirflow(LiveAirflow):
    """Airflow on the CeleryExecutor (see the module docstring): ``with CeleryAirflow(...) as airflow: ...``."""

    components = ("metadatabase", "scheduler", "dag_processor")   # no triggerer: nothing defers here

    def __init__(self, home: Path, database_url: str, *, metadata_url: str, broker_url: str,
                 concurrency: int = 1, parallelism: int = 4, extra_env: dict[str, str] | None = None):
        self.workers = WORKERS
        self.concurrency = concurrency
        celery = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            # One task in hand per worker: a busy worker leaves the next mapped task to the idle one.
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            # No task here runs for hours; set, it also keeps the provider's warning about the default out of the logs.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": hostname.CALLABLE,
            # The workers (and their task processes) import the hostname callable from this repository.
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
            "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        }
        super().__init__(home, database_url, extra_env={**celery, **(extra_env or {})}, parallelism=parallelism)

    @property
    def names(self) -> tuple[str, ...]:
        return (*SERVERS, *(f"worker-{name}" for name in self.workers))

    def start(self, timeout: float = 300) -> "CeleryAirflow":
        """Migrate the metadata database, start the servers and the workers, wait until all are ready."""
        deadline = time.monotonic() + timeout
        self.cli("db", "migrate", timeout=timeout)
        atexit.register(self.stop)
        for name in SERVERS:
            self._spawn(name, [AIRFLOW, name], self.env)
        for name in self.workers:
            env = {**self.env, hostname.VARIABLE: name}
            self._spawn(f"worker-{name}", [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h",
                                           "--concurrency", str(self.concurrency), "--skip-serve-logs",
                                           "--without-gossip", "--without-mingle"], env)
        self._wait_healthy(deadline)
        self._wait_workers(deadline)
        return self

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.home / "logs" / f"{name}.out", "ab") as out:
            self.processes[name] = subprocess.Popen(command, env=env, cwd=self.home, stdout=out,
                                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_workers(self, deadline: float) -> None:
        waiting = set(self.workers)
        while waiting and time.monotonic() < deadline:
            self._check_alive()
            for name in list(waiting):
                path = self.home / "logs" / f"worker-{name}.out"
                if path.exists() and WORKER_READY in path.read_text(encoding="utf-8", errors="replace"):
                    waiting.discard(name)
            time.sleep(0.5)
        if waiting:
            raise LiveAirflowError(f"Celery worker(s) {sorted(waiting)} not ready in time\n{self.log_tail()}")

    def stop(self, grace: float = 20) -> None:
        """Stop the workers (their running tasks with them), then the servers; safe to call twice."""
        ordered = sorted(self.processes.items(), key=lambda item: not item[0].startswith("worker-"))
        self.processes = dict(ordered)
        super().stop(grace)

    def log_tail(self, process: str | None = None, lines: int = 40) -> str:
        """The last lines of one process's output, or of every process's (servers and workers)."""
        parts = []
        for name in [process] if process else self.names:
            path = self.home / "logs" / f"{name}.out"
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no output)"
            parts.append(f"--- {name} ({path}) ---\n{tail(text, lines)}")
        return "\n".join(parts)

    def create_pool(self, name: str, slots: int, description: str = "") -> dict:
        """Create or resize a pool through the REST API."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        existing = self.request("GET", f"/api/v2/pools/{name}")
        if existing.status_code == 404:
            return self.rest("POST", "/api/v2/pools", json=body)
        return self.rest("PATCH", f"/api/v2/pools/{name}", json=body)
