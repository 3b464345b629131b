"""The settings of an Airflow task: the environment, then the Airflow connections sitekb knows.

An Airflow task is an entry point like the CLI: it resolves its settings once
and passes them to every stage it runs. On top of the environment layer
(:class:`sitekb.settings.Settings`), two Airflow connections are read when
they exist, and the environment wins over both:

- ``sitekb_db``: the database (a Postgres URI) when ``SITEKB_DATABASE_URL`` is unset;
- ``sitekb_openai``: password = API key, host = base URL of an
  OpenAI-compatible server (a full URL, or host + port + schema as the path;
  extra ``{"base_url": ...}`` or the OpenAI provider's
  ``{"openai_client_kwargs": {"base_url": ...}}`` also work; empty = OpenAI itself), when
  ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` are unset.

Nothing is written to ``os.environ``: the stages see these values through the
Settings they are given.
"""

from __future__ import annotations

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from sitekb.settings import Settings

DB_CONNECTION_ID = "sitekb_db"
OPENAI_CONNECTION_ID = "sitekb_openai"


def task_settings() -> Settings:
    """Settings of this task: environment first, then the ``sitekb_db`` and ``sitekb_openai`` connections."""
    settings = Settings.from_env()
    extra: dict = {}
    if not settings.database_url:
        db = _connection(DB_CONNECTION_ID)
        if db is not None:
            extra["database_url"] = db.get_uri().replace("postgres://", "postgresql://", 1)
    openai = _connection(OPENAI_CONNECTION_ID)
    if openai is not None:
        if not settings.openai_api_key and openai.password:
            extra["openai_api_key"] = openai.password
        base_url = openai_base_url(openai)
        if not settings.openai_base_url and base_url:
            extra["openai_base_url"] = base_url
    return settings.model_copy(update=extra) if extra else settings


def openai_base_url(conn: Connection) -> str | None:
    """The base URL an Airflow connection names: extra base_url, a URL in host, or host/port/schema."""
    extra = conn.extra_dejson or {}
    if extra.get("base_url"):
        return str(extra["base_url"])
    # The OpenAI provider's convention: {"openai_client_kwargs": {"base_url": ...}}.
    client_kwargs = extra.get("openai_client_kwargs") or {}
    if isinstance(client_kwargs, dict) and client_kwargs.get("base_url"):
        return str(client_kwargs["base_url"])
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.strip('/')}" if conn.schema else ""
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{host}{port}{path}"


def _connection(conn_id: str) -> Connection | None:
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
