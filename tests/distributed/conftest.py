"""Fixtures of the distributed test: Redis, three databases, a sites folder and Airflow on Celery.

- ``distributed_databases``: in the session's Postgres (``database_server`` of
  ``tests/conftest.py``), three databases made afresh for this module and
  dropped after it: ``sitekb_celery`` (what the DAG run writes), ``sitekb_local``
  (what the local engine writes, to compare with) and ``airflow_celery``
  (Airflow's metadata and Celery's results). Fresh ones matter: an embedding
  cache that already holds the demo's vectors would leave no text to shard.
- ``distributed_sites_dir``: a sites folder with the demo site only, cut into
  :data:`SHARDS` embed shards (``airflow.embed_shard_texts``, ``max_embed_shards``).
- ``redis``: Debian's ``redis-server`` on a free port; the module is skipped
  when it is not installed (``.ci/run`` installs it).
- ``celery_airflow``: :class:`tests.distributed.harness.CeleryAirflow` over all
  of that, with the pool ``sitekb_embed_local`` widened so both workers embed at once.

When a test of this folder fails, the tails of every Airflow process's output
(and Redis's) are added to its report.
"""

from __future__ import annotations

import pytest
import yaml

from sitekb.settings import DEFAULT_SITES_DIR
from tests.distributed.harness import CeleryAirflow, Redis, database_url, redis_server

DATABASES = {"dag": "sitekb_celery", "local": "sitekb_local", "metadata": "airflow_celery"}
SITE = "demo"
SHARDS = 4
SHARD_TEXTS = 60            # the demo site has 240 chunks: 4 shards of 60
POOL = "sitekb_embed_local"
POOL_SLOTS = 4


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    if redis_server() is None:
        pytest.skip("redis-server is not installed (Debian's redis-server; .ci/run installs it): "
                    "the Celery broker of the distributed test")
    with Redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _recreate(admin_url: str, names) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop(admin_url: str, names) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def distributed_databases(database_server):
    """URLs (libpq form) of the module's fresh databases, by role: dag, local, metadata."""
    admin = database_url(database_server, "postgres")
    _recreate(admin, DATABASES.values())
    yield {role: database_url(database_server, name) for role, name in DATABASES.items()}
    _drop(admin, DATABASES.values())


@pytest.fixture(scope="module")
def distributed_sites_dir(tmp_path_factory):
    """A sites folder holding the demo site, its embedding cut into SHARDS mapped tasks."""
    folder = tmp_path_factory.mktemp("distributed-sites")
    data = yaml.safe_load((DEFAULT_SITES_DIR / f"{SITE}.yaml").read_text(encoding="utf-8"))
    data.setdefault("airflow", {}).update({"embed_shard_texts": SHARD_TEXTS, "max_embed_shards": SHARDS})
    (folder / f"{SITE}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def celery_airflow(redis, distributed_databases, distributed_sites_dir, tmp_path_factory):
    """Airflow on the CeleryExecutor with two workers (a CeleryAirflow), stopped after the module."""
    metadata = database_url(distributed_databases["metadata"], DATABASES["metadata"], driver="psycopg")
    airflow = CeleryAirflow(tmp_path_factory.mktemp("airflow-celery"), distributed_databases["dag"],
                            metadata_url=metadata, broker_url=redis.url,
                            extra_env={"SITEKB_SITES_DIR": str(distributed_sites_dir)})
    _running.append((airflow, redis))
    try:
        airflow.start()
        airflow.create_pool(POOL, POOL_SLOTS, "sitekb: mapped embed tasks (distributed test: both workers)")
        yield airflow
    finally:
        airflow.stop()
        _running.remove((airflow, redis))


_running: list[tuple[CeleryAirflow, Redis]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _running:
        for airflow, redis in _running:
            report.sections.append(("Airflow and Redis output (tails)",
                                    airflow.log_tail(lines=60) + "\n" + redis.log_tail()))
