"""The OpenAI key and base URL from the Airflow connection `sitekb_openai` (the Airflow corner)."""

from __future__ import annotations

import json
import os

import pytest

tasks = pytest.importorskip("sitekb.orchestration.tasks")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AIRFLOW_CONN_SITEKB_OPENAI"):
        # setenv first: monkeypatch then restores the variable even when the code under test sets it.
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    return monkeypatch


def test_connection_key_and_url_reach_the_environment(clean_env):
    clean_env.setenv("AIRFLOW_CONN_SITEKB_OPENAI", json.dumps(
        {"conn_type": "generic", "password": "sk-from-airflow", "host": "http://127.0.0.1:8000/v1"}))
    assert tasks.export_openai_connection() is True
    assert os.environ["OPENAI_API_KEY"] == "sk-from-airflow"
    assert os.environ["OPENAI_BASE_URL"] == "http://127.0.0.1:8000/v1"


def test_environment_wins_over_the_connection(clean_env):
    clean_env.setenv("OPENAI_API_KEY", "sk-env")
    clean_env.setenv("AIRFLOW_CONN_SITEKB_OPENAI", json.dumps({"conn_type": "generic", "password": "sk-conn"}))
    assert tasks.export_openai_connection() is True
    assert os.environ["OPENAI_API_KEY"] == "sk-env"
    assert "OPENAI_BASE_URL" not in os.environ  # no host: OpenAI itself


def test_missing_connection_changes_nothing(clean_env):
    assert tasks.export_openai_connection() is False
    assert "OPENAI_API_KEY" not in os.environ


def test_base_url_from_uri_style_connection_fields(clean_env):
    from airflow.sdk import Connection

    uri = Connection(conn_id="x", conn_type="generic", host="vllm.internal", port=8000, schema="v1")
    assert tasks.openai_base_url(uri) == "https://vllm.internal:8000/v1"
    local = Connection(conn_id="x", conn_type="generic", host="127.0.0.1", port=11434, schema="v1")
    assert tasks.openai_base_url(local) == "http://127.0.0.1:11434/v1"
    extra = Connection(conn_id="x", conn_type="generic", extra=json.dumps({"base_url": "https://a.test/openai/v1"}))
    assert tasks.openai_base_url(extra) == "https://a.test/openai/v1"
    assert tasks.openai_base_url(Connection(conn_id="x", conn_type="generic")) is None
