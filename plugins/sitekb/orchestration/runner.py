"""Airflow from the command line: one DAG run of a site, and a local Airflow that fits the machine.

- :func:`run_dag` (``sitekb run SITE --engine airflow``, and so ``make run``):
  the site's own DAG ``sitekb_<name>`` once, through ``airflow dags test``
  (in-process, SQLite metadata under ``AIRFLOW_HOME``, default
  ``$SITEKB_HOME/airflow``). The whole output goes to
  ``$AIRFLOW_HOME/last_dag_test.log``; the lines sitekb's loggers wrote (what
  each stage did) are passed on to this process's log as they come, and
  :mod:`sitekb.orchestration.progress` shows the phase, each task's state and
  duration, and (on a terminal) how far the crawl and the embedding have come.
- :func:`standalone` (``sitekb airflow standalone``, ``make airflow``): every
  Airflow component bound to 127.0.0.1, parallelism for this machine's cores,
  sitekb's embedding pools created, the site DAGs unpaused, and the URL and
  login printed.
- :func:`airflow`: any other ``airflow`` command with sitekb's environment.

Settings read (passed in): ``Settings.home``, ``Settings.airflow_folder``,
``Settings.dags_folder``, ``Settings.sites_dir`` and the environment captured with them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import deque
from contextlib import nullcontext
from pathlib import Path

from sitekb import store
from sitekb.errors import SitekbError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import PROCESS_ENVIRONMENT, REPO_ROOT, Settings
from sitekb.sites import SiteConfig
from sitekb.store import runs

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
# A structlog line of Airflow's console output from one of sitekb's loggers:
# "2026-12-01T20:26:17.23Z [info     ] [crawl] full crawl: ... [sitekb.engine] ..."
_SITEKB_LINE = re.compile(r"\[(?:info|warning|error)\s*\]\s+(?P<message>.*?)\s+\[(?P<logger>sitekb[\w.]*)\]")


def airflow_env(settings: Settings, database_url: str) -> dict[str, str]:
    """Environment for Airflow subprocesses: project-local home, our DAGs, no examples, sitekb's logs at INFO."""
    home = settings.airflow_folder
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {**PROCESS_ENVIRONMENT, **settings.environment}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # INFO: what each stage did is the point of a task log (only sitekb's lines are passed on).
        "AIRFLOW__LOGGING__LOGGING_LEVEL": settings.environment.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        # Deprecation notices of Airflow's own dependencies are no news to a sitekb operator.
        "PYTHONWARNINGS": settings.environment.get("PYTHONWARNINGS", "ignore::DeprecationWarning"),
        "SITEKB_DATABASE_URL": database_url,
        "SITEKB_HOME": str(settings.home),
        "SITEKB_SITES_DIR": str(settings.sites_dir),
        # `airflow` starts helpers as subprocesses; they must find this environment's binaries.
        "PATH": bin_dir + ":" + settings.environment.get("PATH", ""),
    })
    return env


def _airflow() -> str:
    found = shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which("airflow")
    if not found:
        raise SitekbError("Airflow is not installed: `pip install 'sitekb[airflow]'` (or `make install`)")
    return found


def ensure_metadata_db(env: dict[str, str]) -> None:
    """`airflow db migrate` (idempotent, seconds on SQLite)."""
    result = subprocess.run([_airflow(), "db", "migrate"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SitekbError("`airflow db migrate` failed:\n" + _tail(result.stdout + "\n" + result.stderr))


def airflow(settings: Settings, args: list[str]) -> int:
    """Run the ``airflow`` CLI with sitekb's environment (``sitekb airflow ...``); return its exit code."""
    if args[:1] == ["standalone"]:
        return standalone(settings, args[1:])
    env = airflow_env(settings, store.database_url(settings))
    ensure_metadata_db(env)
    created = ensure_pools(env)
    if created:
        log.info("created the Airflow pools %s", ", ".join(created))
    return subprocess.call([_airflow(), *args], env=env)


def local_env(settings: Settings, database_url: str, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The environment of a local Airflow: loopback only, parallelism for the cores, simple auth."""
    env = airflow_env(settings, database_url)
    cores = os.cpu_count() or 2
    defaults = {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(max(2, cores)),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(2, cores)),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
    }
    for name, value in defaults.items():
        env[name] = settings.environment.get(name) or value
    return env


def ensure_pools(env: dict[str, str]) -> list[str]:
    """Create the embedding pools (``sitekb_embed_<provider>``) that do not exist yet; return the new ones."""
    from sitekb.orchestration.naming import POOLS

    listed = subprocess.run([_airflow(), "pools", "list", "--output", "json"], env=env, capture_output=True, text=True)
    existing = {p.get("pool") for p in _json_list(listed.stdout)} if listed.returncode == 0 else set()
    missing = {name: pool for name, pool in POOLS.items() if name not in existing}
    if not missing:
        return []
    path = Path(env["AIRFLOW_HOME"]) / "sitekb_pools.json"
    path.write_text(json.dumps({name: {"slots": slots, "description": text, "include_deferred": False}
                                for name, (slots, text) in missing.items()}), encoding="utf-8")
    result = subprocess.run([_airflow(), "pools", "import", str(path)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SitekbError("`airflow pools import` failed:\n" + _tail(result.stdout + "\n" + result.stderr))
    return sorted(missing)


def _json_list(text: str) -> list[dict]:
    start = text.find("[")
    try:
        value = json.loads(text[start:]) if start >= 0 else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def standalone(settings: Settings, args: list[str]) -> int:
    """``airflow standalone`` on 127.0.0.1, fitted to the machine, with the site DAGs unpaused."""
    port = int(settings.environment.get("AIRFLOW__API__PORT") or DEFAULT_PORT)
    env = local_env(settings, store.database_url(settings), port)
    ensure_metadata_db(env)
    ensure_pools(env)
    url = env["AIRFLOW__API__BASE_URL"]
    process = subprocess.Popen([_airflow(), "standalone", *args], env=env)
    try:
        if _wait_healthy(url, process):
            unpaused = unpause_site_dags(env, settings)
            print(f"\nAirflow is up: {url}  (login: {login_hint(env)})", flush=True)
            print(f"site DAGs unpaused: {', '.join(unpaused) or 'none found yet'}; Ctrl-C stops Airflow", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(2)
    return False


def unpause_site_dags(env: dict[str, str], settings: Settings, timeout: float = 180) -> list[str]:
    """Unpause ``sitekb_<site>`` for every valid site file, once the dag-processor has parsed them."""
    from sitekb.orchestration.naming import site_dag_ids

    wanted = site_dag_ids(settings)
    done: list[str] = []
    deadline = time.monotonic() + timeout
    while wanted and time.monotonic() < deadline:
        for dag in list(wanted):
            result = subprocess.run([_airflow(), "dags", "unpause", dag], env=env, capture_output=True, text=True)
            if result.returncode == 0:
                done.append(dag)
                wanted.remove(dag)
        if wanted:
            time.sleep(5)
    return done


def login_hint(env: dict[str, str]) -> str:
    """``user / password`` of the simple auth manager's first user (the password file Airflow generated)."""
    users = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    user = users.split(",")[0].split(":")[0]
    path = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                or Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
    try:
        password = json.loads(path.read_text(encoding="utf-8")).get(user)
    except (OSError, ValueError):
        password = None
    return f"{user} / {password}" if password else f"{user}, password in {path}"


def run_dag(site: SiteConfig, site_ref: str, settings: Settings, *, origin: str | None = None,
            alias: str = DEFAULT_ALIAS, full_recrawl: bool = False, live: bool = False) -> str:
    """Run the site's DAG (``sitekb_<name>``) once; return the sitekb run id it produced.

    A site file outside the sites folder is run from a folder of its own, so
    its DAG exists without touching the others. ``live``: draw the run on
    stderr, a terminal (:class:`sitekb.orchestration.progress.LiveDisplay`);
    otherwise each phase and each task's start and end is a log line.
    """
    from sitekb.orchestration import progress
    from sitekb.orchestration.naming import dag_id
    from sitekb.sites import resolve_site_path

    if site.airflow.approval.required:
        raise SitekbError(
            f"site {site.name!r} requires a content owner's approval before publishing, and `airflow dags test` "
            f"cannot wait for one: trigger the DAG {dag_id(site.name)} in Airflow (`make airflow`), or run "
            f"`sitekb run {site.name}` (it builds and judges the snapshot and leaves it for `sitekb snapshots publish`)"
        )
    path = resolve_site_path(site_ref, settings.sites_dir)
    if path.resolve().parent != Path(settings.sites_dir).resolve():
        single = settings.airflow_folder / "single_site"
        shutil.rmtree(single, ignore_errors=True)
        single.mkdir(parents=True)
        shutil.copyfile(path, single / path.name)
        settings = settings.model_copy(update={"sites_dir": single})
    dag = dag_id(site.name)
    log_path = settings.airflow_folder / "last_dag_test.log"
    display = (progress.LiveDisplay if live else progress.LogDisplay)(dag, log_path)
    with display:
        display.phase("sitekb")
        database_url = store.database_url(settings)
        with store.connection(database_url) as conn:
            store.migrate(conn)
            before = runs.database_now(conn)
        display.phase("metadata")
        env = airflow_env(settings, database_url)
        ensure_metadata_db(env)
        conf = {"start_url": origin, "alias": alias, "full_recrawl": full_recrawl, "dry_run": False}
        command = [_airflow(), "dags", "test", dag, "-c", json.dumps(conf)]
        log.info("airflow dags test %s -c '%s'", dag, json.dumps(conf))
        display.phase("launch")
        lines: deque[str] = deque(maxlen=200)   # the tail for an error message; the whole output is in the file
        # The counts of the long stages come from the database, for the live display only.
        poller = progress.Poller(display, database_url, site.name, before) if live else nullcontext()
        # Unbuffered: each line reaches the display (and the file) when Airflow writes it.
        with open(log_path, "w", encoding="utf-8") as out, poller, subprocess.Popen(
                command, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True) as process:
            for line in process.stdout:
                out.write(line)
                lines.append(line)
                match = _SITEKB_LINE.search(line)
                if match:
                    logging.getLogger(match["logger"]).info("%s", match["message"])
                display.feed(line)
            returncode = process.wait()
        display.finish(returncode)
    with store.connection(database_url) as conn:
        run_id = runs.started_since(conn, site.name, before)
    if run_id is None:
        raise SitekbError(
            f"the Airflow DAG run of {dag} did not start a sitekb run (exit {returncode}); log: {log_path}\n"
            + _tail("".join(lines))
        )
    return run_id


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
