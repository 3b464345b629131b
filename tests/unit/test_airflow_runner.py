"""The local Airflow sitekb starts (`make airflow`): loopback only, sized to the machine, pools in place."""

from __future__ import annotations

import json
import os

import pytest

from sitekb.orchestration import runner
from sitekb.orchestration.naming import POOLS
from sitekb.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home", airflow_home=tmp_path / "airflow", environment=dict(os.environ))


def test_the_local_airflow_binds_loopback_and_fits_the_cores(settings):
    env = runner.local_env(settings, "postgresql://kb@127.0.0.1/kb", port=8793)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "8793"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8793/execution/"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) == max(2, os.cpu_count() or 2) < 32
    assert env["SITEKB_SITES_DIR"] == str(settings.sites_dir)


def test_an_operator_setting_wins_over_the_local_defaults(tmp_path):
    settings = Settings(home=tmp_path, environment={**os.environ, "AIRFLOW__CORE__PARALLELISM": "6"})
    assert runner.local_env(settings, "postgresql://kb@127.0.0.1/kb")["AIRFLOW__CORE__PARALLELISM"] == "6"


def test_the_login_comes_from_the_password_file_airflow_wrote(settings, tmp_path):
    env = runner.local_env(settings, "postgresql://kb@127.0.0.1/kb")
    assert runner.login_hint(env).startswith("admin, password in ")
    (settings.airflow_folder / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "s3"}))
    assert runner.login_hint(env) == "admin / s3"


@pytest.mark.slow
def test_the_embedding_pools_are_created_once(settings):
    env = runner.local_env(settings, "postgresql://kb@127.0.0.1/kb")
    runner.ensure_metadata_db(env)
    assert runner.ensure_pools(env) == sorted(POOLS)
    assert runner.ensure_pools(env) == []
