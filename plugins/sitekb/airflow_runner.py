"""Run the real `sitekb_refresh` DAG once through Airflow, from the command line.

Used by ``sitekb run SITE --engine airflow`` (and so by ``make run``): Airflow 3
with its SQLite metadata database in ``$SITEKB_HOME/airflow``, the DAGs in this
repository's ``dags/`` folder, and ``airflow dags test`` executing one DAG run
in-process. It imports no Airflow itself: Airflow runs as a subprocess.

Settings read: ``SITEKB_HOME``, ``SITEKB_DAGS_FOLDER`` (default ``<repo>/dags``),
``AIRFLOW_HOME`` (default ``$SITEKB_HOME/airflow``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sitekb import db
from sitekb.errors import SitekbError
from sitekb.settings import Settings
from sitekb.sites import REPO_ROOT, SiteConfig

DAG_ID = "sitekb_refresh"


def airflow_env(settings: Settings, database_url: str) -> dict[str, str]:
    """Environment for Airflow subprocesses: project-local home, our DAGs, no examples."""
    home = Path(os.environ.get("AIRFLOW_HOME") or settings.home / "airflow")
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": os.environ.get("SITEKB_DAGS_FOLDER", str(REPO_ROOT / "dags")),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "SITEKB_DATABASE_URL": database_url,
        "SITEKB_HOME": str(settings.home),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GX_ANALYTICS_ENABLED": "false",
        # `airflow` starts helpers as subprocesses; they must find this environment's binaries.
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
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
        raise SitekbError("`airflow db migrate` failed:\n" + _tail(result))


def run_dag(site: SiteConfig, site_ref: str, settings: Settings, *, origin: str | None = None,
            alias: str = "production", full_recrawl: bool = False) -> str:
    """Run one DAG run for ``site``; return the sitekb run id it produced."""
    database_url = db.database_url(settings)
    env = airflow_env(settings, database_url)
    ensure_metadata_db(env)
    with db.connection(database_url) as conn:
        db.migrate(conn)
        before = conn.execute("SELECT statement_timestamp()").fetchone()[0]
    conf = {"site": site_ref, "start_url": origin, "alias": alias, "full_recrawl": full_recrawl}
    command = [_airflow(), "dags", "test", DAG_ID, "-c", json.dumps(conf)]
    print(f"airflow dags test {DAG_ID} -c '{json.dumps(conf)}'", file=sys.stderr)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    log_path = Path(env["AIRFLOW_HOME"]) / "last_dag_test.log"
    log_path.write_text(result.stdout + "\n" + result.stderr)
    with db.connection(database_url) as conn:
        row = conn.execute(
            "SELECT run_id FROM sitekb.runs WHERE site = %s AND started_at > %s ORDER BY started_at DESC LIMIT 1",
            (site.name, before),
        ).fetchone()
    if row is None:
        raise SitekbError(
            f"the Airflow DAG run did not start a sitekb run (exit {result.returncode}); log: {log_path}\n"
            + _tail(result)
        )
    return row[0]


def _tail(result: subprocess.CompletedProcess, lines: int = 25) -> str:
    return "\n".join((result.stderr + "\n" + result.stdout).strip().splitlines()[-lines:])
