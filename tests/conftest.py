"""Shared fixtures: a real Postgres with pgvector, the demo site on 127.0.0.1.

Database: ``SITEKB_TEST_DATABASE_URL`` targets an external server (its
``sitekb`` schemas are dropped and recreated per test that asks for a clean
database); without it, an embedded PostgreSQL 18 + pgvector starts in a
temporary folder once per session and stops at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sitekb.settings import PROCESS_ENVIRONMENT  # noqa: E402  (what every entry point sets)

for _name, _value in PROCESS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[1]


def _reset_schema(url: str) -> None:
    from sitekb import store

    with store.connect(url, register=False) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sitekb\\_snap\\_%'"):
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.execute("DROP SCHEMA IF EXISTS sitekb_snapshots CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS sitekb_api CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS sitekb CASCADE")
        conn.execute("DROP TABLE IF EXISTS public.sitekb_schema_migrations")
        conn.execute("DROP TABLE IF EXISTS public.sitekb_schema_repeatables")
        for role in ("sitekb_reader",):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists:
                conn.execute(f"DROP OWNED BY {role} CASCADE")


@pytest.fixture(scope="session")
def database_server(tmp_path_factory):
    """URL of a Postgres with pgvector for the whole session."""
    external = os.environ.get("SITEKB_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from sitekb.store import embedded as embedded_pg

    # A short path: Unix socket paths are limited to ~100 bytes.
    home = Path(tempfile.mkdtemp(prefix="skt-"))
    url = embedded_pg.start(home)
    yield url
    embedded_pg.stop(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database_url(database_server, monkeypatch):
    """A freshly migrated, empty sitekb schema; SITEKB_DATABASE_URL points at it."""
    from sitekb import store

    _reset_schema(database_server)
    with store.connect(database_server) as conn:
        store.migrate(conn)
    monkeypatch.setenv("SITEKB_DATABASE_URL", database_server)
    return database_server


@pytest.fixture
def conn(database_url):
    from sitekb import store

    connection = store.connect(database_url)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def demo_site():
    """The bundled demo site on a free port for the whole session."""
    from sitekb.demo.server import DemoSite

    with DemoSite(port=0) as site:
        yield site


@pytest.fixture
def demo_config(demo_site):
    """The demo site config rebased onto the running demo server."""
    from sitekb.sites import load_site

    return load_site("demo").with_base_url(demo_site.base_url)


@pytest.fixture
def settings(database_url, tmp_path):
    """Settings of a test entry point: the test database, a private SITEKB_HOME."""
    from sitekb.settings import Settings

    return Settings.from_env(database_url=database_url, home=tmp_path / "home")
