"""An Airflow task's settings: the environment first, then the connections sitekb_db and sitekb_openai.

Nothing is written to the process environment: stages see the connections
through the Settings they are given.
"""

from __future__ import annotations

import json
import os

import pytest

settings_module = pytest.importorskip("sitekb.orchestration.settings")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SITEKB_DATABASE_URL", "AIRFLOW_CONN_SITEKB_OPENAI",
                 "AIRFLOW_CONN_SITEKB_DB"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_connection_key_and_url_reach_the_settings_not_the_environment(clean_env):
    clean_env.setenv("AIRFLOW_CONN_SITEKB_OPENAI", json.dumps(
        {"conn_type": "generic", "password": "sk-from-airflow", "host": "http://127.0.0.1:8000/v1"}))
    settings = settings_module.task_settings()
    assert settings.openai_api_key == "sk-from-airflow"
    assert settings.openai_base_url == "http://127.0.0.1:8000/v1"
    assert "OPENAI_API_KEY" not in os.environ and "OPENAI_BASE_URL" not in os.environ


def test_environment_wins_over_the_connection(clean_env):
    clean_env.setenv("OPENAI_API_KEY", "sk-env")
    clean_env.setenv("AIRFLOW_CONN_SITEKB_OPENAI", json.dumps({"conn_type": "generic", "password": "sk-conn"}))
    settings = settings_module.task_settings()
    assert settings.openai_api_key == "sk-env"
    assert settings.openai_base_url is None  # no host: OpenAI itself


def test_missing_connections_change_nothing(clean_env):
    settings = settings_module.task_settings()
    assert settings.openai_api_key is None and settings.database_url is None


def test_the_database_connection_is_used_when_no_url_is_set(clean_env):
    clean_env.setenv("AIRFLOW_CONN_SITEKB_DB", "postgres://kb:secret@db.internal:5432/sitekb")
    assert settings_module.task_settings().database_url == "postgresql://kb:secret@db.internal:5432/sitekb"
    clean_env.setenv("SITEKB_DATABASE_URL", "postgresql://env@127.0.0.1/sitekb")
    assert settings_module.task_settings().database_url == "postgresql://env@127.0.0.1/sitekb"


def test_base_url_from_uri_style_connection_fields(clean_env):
    from airflow.sdk import Connection

    openai_base_url = settings_module.openai_base_url
    uri = Connection(conn_id="x", conn_type="generic", host="vllm.internal", port=8000, schema="v1")
    assert openai_base_url(uri) == "https://vllm.internal:8000/v1"
    local = Connection(conn_id="x", conn_type="generic", host="127.0.0.1", port=11434, schema="v1")
    assert openai_base_url(local) == "http://127.0.0.1:11434/v1"
    extra = Connection(conn_id="x", conn_type="generic", extra=json.dumps({"base_url": "https://a.test/openai/v1"}))
    assert openai_base_url(extra) == "https://a.test/openai/v1"
    assert openai_base_url(Connection(conn_id="x", conn_type="generic")) is None
    provider_style = Connection(conn_id="x", conn_type="openai", password="k",
                                extra=json.dumps({"openai_client_kwargs": {"base_url": "http://127.0.0.1:9/v1"}}))
    assert openai_base_url(provider_style) == "http://127.0.0.1:9/v1"


def test_a_postgres_provider_connection_keeps_its_options(clean_env):
    clean_env.setenv("AIRFLOW_CONN_SITEKB_DB", json.dumps({
        "conn_type": "postgres", "host": "db.internal", "port": 5432, "login": "kb", "password": "p@ss",
        "schema": "sitekb", "extra": {"sslmode": "require"}}))
    url = settings_module.task_settings().database_url
    assert url.startswith("postgresql://kb:p%40ss@db.internal:5432/sitekb") and "sslmode=require" in url
