"""Run the real ``sitekb_refresh`` DAG once through Airflow, from the command line.

Used by ``sitekb run SITE --engine airflow`` (and so by ``make run``): Airflow 3
with its SQLite metadata database under ``AIRFLOW_HOME`` (default
``$SITEKB_HOME/airflow``), the DAGs in this repository's ``dags/`` folder, and
``airflow dags test`` executing one DAG run in-process. Airflow runs as a
subprocess: the whole output goes to ``$AIRFLOW_HOME/last_dag_test.log`` and
the lines sitekb's own loggers wrote (what each stage did) are passed on to
this process's log as they come.

Settings read (passed in): ``Settings.home``, ``Settings.airflow_folder``,
``Settings.dags_folder`` and the environment captured with them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

from sitekb import store
from sitekb.errors import SitekbError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import PROCESS_ENVIRONMENT, REPO_ROOT, Settings
from sitekb.sites import SiteConfig
from sitekb.store import runs

log = logging.getLogger(__name__)

DAG_ID = "sitekb_refresh"
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
    env = airflow_env(settings, store.database_url(settings))
    ensure_metadata_db(env)
    return subprocess.call([_airflow(), *args], env=env)


def run_dag(site: SiteConfig, site_ref: str, settings: Settings, *, origin: str | None = None,
            alias: str = DEFAULT_ALIAS, full_recrawl: bool = False) -> str:
    """Run one DAG run for ``site``; return the sitekb run id it produced."""
    database_url = store.database_url(settings)
    env = airflow_env(settings, database_url)
    ensure_metadata_db(env)
    with store.connection(database_url) as conn:
        store.migrate(conn)
        before = runs.database_now(conn)
    conf = {"site": site_ref, "start_url": origin, "alias": alias, "full_recrawl": full_recrawl}
    command = [_airflow(), "dags", "test", DAG_ID, "-c", json.dumps(conf)]
    log.info("airflow dags test %s -c '%s'", DAG_ID, json.dumps(conf))
    log_path = Path(env["AIRFLOW_HOME"]) / "last_dag_test.log"
    with open(log_path, "w", encoding="utf-8") as out, subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        lines = []
        for line in process.stdout:
            out.write(line)
            lines.append(line)
            match = _SITEKB_LINE.search(line)
            if match:
                logging.getLogger(match["logger"]).info("%s", match["message"])
        returncode = process.wait()
    with store.connection(database_url) as conn:
        run_id = runs.started_since(conn, site.name, before)
    if run_id is None:
        raise SitekbError(
            f"the Airflow DAG run did not start a sitekb run (exit {returncode}); log: {log_path}\n"
            + _tail("".join(lines))
        )
    return run_id


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
