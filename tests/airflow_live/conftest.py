"""Session fixtures of the live Airflow tests: ``live_airflow``, and the DAG and site folders it reads.

``live_airflow`` is one Airflow 3 on 127.0.0.1 (a :class:`~tests.airflow_live.harness.LiveAirflow`)
shared by every test of this folder, started on first use (about 20 s) and stopped when the
session ends. It runs against the session's sitekb database (``database_server`` of
``tests/conftest.py``), which other tests share: a test seeds data under names of its own, and
one that needs a clean sitekb schema resets it (``tests.conftest._reset_schema``) only while no
DAG run is in flight.

``live_dags_folder`` is its DAGs folder: a copy of the repository's ``dags/`` made at the start
of the session (so a test may add a DAG file of its own). ``live_sites_dir`` is its
``SITEKB_SITES_DIR``: a copy of ``dags/sites/*.yaml``, to which a test may add a site file.
The DAG processor looks for new files every 5 s and parses each file every 10 s; wait for a DAG
with ``live_airflow.wait_for_dag(dag_id)``.
"""

from __future__ import annotations

import shutil

import pytest

from sitekb.settings import DEFAULT_DAGS_FOLDER, DEFAULT_SITES_DIR
from tests.airflow_live.harness import LiveAirflow


@pytest.fixture(scope="session")
def live_dags_folder(tmp_path_factory):
    """The DAGs folder of the live Airflow: a copy of the repository's dags/ (sites/ included)."""
    folder = tmp_path_factory.mktemp("live") / "dags"
    shutil.copytree(DEFAULT_DAGS_FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


@pytest.fixture(scope="session")
def live_sites_dir(tmp_path_factory):
    """The SITEKB_SITES_DIR of the live Airflow: starts as a copy of the repository's site files."""
    folder = tmp_path_factory.mktemp("live-sites")
    for path in DEFAULT_SITES_DIR.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="session")
def live_airflow(database_server, live_dags_folder, live_sites_dir, tmp_path_factory):
    """A running Airflow (LocalExecutor, SQLite metadata, users admin/admin and viewer/viewer): a LiveAirflow."""
    with LiveAirflow(tmp_path_factory.mktemp("airflow"), database_server, dags_folder=live_dags_folder,
                     extra_env={"SITEKB_SITES_DIR": str(live_sites_dir)}) as airflow:
        yield airflow
