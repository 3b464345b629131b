"""The schema: numbered migrations applied once each, repeatable scripts applied when they change,
privileges last; a database upgraded from the last release defines exactly what a fresh one does."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sitekb import store
from sitekb.store import schema

# Migrations 0005-0009 as sitekb 0.1.0 (commit 0c1f7bb) released them, with the function
# bodies they carried then, to upgrade from. 0001-0004 are released unchanged: their sha256
# must stay (a released migration is never edited; a change is a new number).
RELEASED = Path(__file__).parent / "schema_0_1_0"
RELEASED_UNCHANGED = {
    1: "9a8f7e2a0e103014eee50165af328221d3a52400591ea11146d92c05e242dc06",
    2: "584bb0519c8aff82725cda854d1746e9acb45d121a846beafbf12b81f26059d9",
    3: "a1aaa4658cce29f6fa4b96c51cab71781c365027a542881d4041ecd475644d46",
    4: "0332747302ce746c9b829fade6373ec2b0a311bd76508a57d51e58aba0d954e4",
}


def test_migrations_are_numbered_without_gaps():
    versions = [v for v, _, _ in schema.migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_is_idempotent(conn):
    assert store.migrate(conn) == []
    applied = [r[0] for r in conn.execute("SELECT version FROM public.sitekb_schema_migrations ORDER BY 1")]
    assert applied == [v for v, _, _ in schema.migrations()]
    tables = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sitekb'")}
    assert {"runs", "pages", "exclusions", "documents", "chunks", "embedding_cache", "snapshots",
            "aliases", "alias_events"} <= tables


def test_0009_gives_snapshots_built_before_it_their_search_view(conn):
    from tests.db.factory import make_snapshot, random_pages

    snap = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    retired = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    conn.execute(f"DROP VIEW sitekb_snapshots.{retired.table_name} CASCADE")    # as if retention had run
    for sid in (snap.snapshot_id, retired.snapshot_id):
        conn.execute(f"DROP SCHEMA sitekb_snap_{sid} CASCADE")                   # as built before 0009
    conn.execute(next(text for version, _, text in schema.migrations() if version == 9))
    assert conn.execute(f"SELECT count(*) FROM sitekb_snap_{snap.snapshot_id}.chunks").fetchone()[0] == 12
    assert conn.execute("SELECT to_regnamespace(%s)", (f"sitekb_snap_{retired.snapshot_id}",)).fetchone()[0] is None


def test_concurrent_first_start_applies_each_migration_once(database_server):
    from tests.conftest import _reset_schema

    _reset_schema(database_server)
    results, errors = [], []

    def start():
        try:
            with store.connection(database_server) as c:
                results.append(store.migrate(c))
        except Exception as exc:  # noqa: BLE001 - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(schema.migrations())]


def test_vector_type_round_trips(conn):
    import numpy as np

    row = conn.execute("SELECT %s::vector(3)", (np.array([1.0, 2.0, 3.0], dtype=np.float32),)).fetchone()
    value = row[0].to_list() if hasattr(row[0], "to_list") else list(row[0])
    assert value == [1.0, 2.0, 3.0]


def test_redact_hides_passwords():
    assert store.redact("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"


def test_the_embedded_server_gets_more_shared_memory_once_and_restarts_cleanly(tmp_path):
    import psycopg

    from sitekb.store import embedded as embedded_pg

    home = tmp_path / "pg"
    url = embedded_pg.start(home)
    try:
        with psycopg.connect(url) as conn:
            mb = conn.execute("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"
                              ).fetchone()[0]
        assert mb == embedded_pg.shared_buffers_mb() > 128
        assert (home / "pgdata" / embedded_pg.TUNED_MARKER).exists()
        embedded_pg.stop(home)
        assert embedded_pg.start(home) == url       # stopped and started again in one process
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        embedded_pg.stop(home)


def test_0009_strips_credentials_recorded_before_it(conn):
    from sitekb.store import snapshots

    with conn.transaction():
        sid = snapshots.create_record(conn, site="s", run_id="old", provider="openai", model="m", dimensions=8,
                                      tokenizer="t", config_hash="x", extractor_version="x", chunker_version="x")
    conn.execute("UPDATE sitekb.snapshots SET embedding_base_url = 'https://me:secret@llm.test:8443/v1' "
                 "WHERE snapshot_id = %s", (sid,))
    conn.execute(next(text for version, _, text in schema.migrations() if version == 9))
    assert snapshots.get(conn, sid).embedding_base_url == "https://llm.test:8443/v1"


# -- repeatable scripts ------------------------------------------------------------

def _definitions(url: str) -> dict:
    """Every function, view and type of sitekb's schemas, with its grants, as the server prints them."""
    with store.connection(url) as conn:
        functions = dict(conn.execute(
            """SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '')
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname IN ('sitekb', 'sitekb_api', 'sitekb_snap_gone')"""))
        views = dict(conn.execute(
            """SELECT c.oid::regclass::text, pg_get_viewdef(c.oid) || coalesce(c.relacl::text, '')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'v' AND n.nspname IN ('sitekb', 'sitekb_api', 'sitekb_snap_gone')"""))
        types = dict(conn.execute(
            """SELECT t.oid::regtype::text, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod),
                                                       ', ' ORDER BY a.attnum)
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_class c ON c.oid = t.typrelid
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
               WHERE n.nspname = 'sitekb_api' AND c.relkind = 'c' GROUP BY 1"""))
        columns = dict(conn.execute(
            """SELECT table_schema || '.' || table_name, string_agg(column_name || ' ' || data_type || ' '
                      || coalesce(column_default, ''), ', ' ORDER BY ordinal_position)
               FROM information_schema.columns WHERE table_schema = 'sitekb' GROUP BY 1"""))
        schemas = dict(conn.execute(
            """SELECT nspname, coalesce(nspacl::text, '') FROM pg_namespace
               WHERE nspname IN ('sitekb', 'sitekb_api', 'sitekb_snapshots', 'sitekb_snap_gone')"""))
    return {"functions": functions, "views": views, "types": types, "columns": columns, "schemas": schemas}


@pytest.fixture
def upgraded_database(database_server):
    """A second database, migrated as sitekb 0.1.0 released it, then upgraded by this version."""
    name = "sitekb_upgrade_test"
    admin = make_conninfo(database_server, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(database_server, dbname=name)
    released = [(v, n, t) for v, n, t in schema.migrations() if v in RELEASED_UNCHANGED]
    for path in sorted(RELEASED.glob("*.sql")):
        version, migration = re.match(r"(\d{4})_(.+)\.sql", path.name).groups()
        released.append((int(version), migration, path.read_text()))
    assert [v for v, _, _ in released] == list(range(1, 10))
    with store.connection(url) as conn, conn.transaction():
        conn.execute("CREATE TABLE public.sitekb_schema_migrations (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for version, migration, text in released:
            conn.execute(text)
            conn.execute("INSERT INTO public.sitekb_schema_migrations VALUES (%s, %s)", (version, migration))
    with store.connection(url) as conn:
        applied = store.migrate(conn)
    yield url, applied
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_released_migrations_are_never_edited():
    import hashlib

    shipped = {v: hashlib.sha256(t.encode()).hexdigest() for v, _, t in schema.migrations()}
    assert {v: shipped[v] for v in RELEASED_UNCHANGED} == RELEASED_UNCHANGED


def test_an_upgraded_database_defines_what_a_fresh_one_does(database_url, upgraded_database):
    url, applied = upgraded_database
    assert applied == [v for v, _, _ in schema.migrations() if v > 9]
    fresh, upgraded = _definitions(database_url), _definitions(url)
    assert fresh["functions"] and fresh["views"] and "sitekb_api.search(text,text,vector,integer,text,text,bigint," \
        "text,text[],text,date,date,integer,text,double precision)" in fresh["functions"]
    for kind in fresh:
        assert upgraded[kind] == fresh[kind], kind
    # The reader may call the API and nothing else (the same grants on both).
    assert "sitekb_reader=X" in fresh["functions"]["sitekb_api.search(text,text,vector,integer,text,text,bigint," \
        "text,text[],text,date,date,integer,text,double precision)"]
    assert not any("sitekb_reader" in d for name, d in fresh["functions"].items() if name.startswith("sitekb."))


def test_no_function_or_view_body_is_defined_in_two_files():
    created = re.compile(r"CREATE (?:OR REPLACE )?(?:FUNCTION|VIEW) ([a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*)", re.I)
    owners: dict[str, list[str]] = {}
    for version, name, text in schema.migrations():
        for obj in created.findall(text):
            owners.setdefault(obj, []).append(f"migration {version}")
    for script in schema.repeatables():
        for obj in created.findall(script.text):
            owners.setdefault(obj, []).append(script.name)
    assert {obj: files for obj, files in owners.items() if len(files) > 1} == {}
    assert [obj for obj, files in owners.items() if files[0].startswith("migration")] == []  # code is repeatable
    for script in schema.repeatables():
        assert owners[script.name] == [script.name]      # a file is named after what it defines


def test_a_changed_repeatable_script_is_applied_again_and_keeps_the_grants(conn, monkeypatch):
    original = schema.repeatables()
    changed = [s if s.name != "sitekb_api.schema_version" else schema.Script(
        s.name, s.text.replace("SELECT max(version)", "SELECT max(version) + 0")) for s in original]
    monkeypatch.setattr(schema, "repeatables", lambda: changed)
    assert store.migrate(conn) == []                      # no migration, but the changed function is replaced
    body = conn.execute("SELECT pg_get_functiondef('sitekb_api.schema_version()'::regprocedure)").fetchone()[0]
    assert "max(version) + 0" in body
    assert conn.execute("SELECT has_function_privilege('sitekb_reader', 'sitekb_api.schema_version()', "
                        "'EXECUTE')").fetchone()[0]
    recorded = dict(conn.execute("SELECT name, checksum FROM public.sitekb_schema_repeatables"))
    assert recorded["sitekb_api.schema_version"] == changed[[s.name for s in changed].index(
        "sitekb_api.schema_version")].checksum
    assert conn.execute("SELECT sitekb_api.schema_version()").fetchone()[0] == schema.latest_version()


def test_unchanged_scripts_are_not_applied_again(conn):
    before = conn.execute("SELECT max(applied_at) FROM public.sitekb_schema_repeatables").fetchone()[0]
    assert store.migrate(conn) == []
    assert conn.execute("SELECT max(applied_at) FROM public.sitekb_schema_repeatables").fetchone()[0] == before


def test_api_functions_search_pg_catalog_only(conn):
    """SECURITY DEFINER functions resolve names in pg_catalog alone; the vector extension's
    schema (often public, where others may create objects) is written out where it is used."""
    found = conn.execute(
        """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'sitekb_api' AND p.prosecdef""").fetchall()
    assert len(found) >= 3
    for name, config in found:
        assert "search_path=pg_catalog, pg_temp" in config, name


def test_migrate_restores_revoked_grants_of_the_reader_role(conn):
    conn.execute("REVOKE EXECUTE ON FUNCTION sitekb_api.schema_version() FROM sitekb_reader")
    conn.execute("REVOKE SELECT ON sitekb_api.aliases FROM sitekb_reader")
    assert not schema.reader_grants_complete(conn)
    assert store.migrate(conn) == []                      # nothing changed but the grants
    assert schema.reader_grants_complete(conn)
    assert conn.execute("SELECT has_function_privilege('sitekb_reader', 'sitekb_api.schema_version()', "
                        "'EXECUTE')").fetchone()[0]
    assert conn.execute("SELECT has_table_privilege('sitekb_reader', 'sitekb_api.aliases', 'SELECT')").fetchone()[0]


def test_migrate_leaves_a_database_migrated_by_a_newer_sitekb_alone(conn, caplog):
    newer = schema.latest_version() + 1
    conn.execute("INSERT INTO public.sitekb_schema_migrations (version, name) VALUES (%s, 'from_the_future')",
                 (newer,))
    conn.execute("CREATE OR REPLACE FUNCTION sitekb_api.schema_version() RETURNS integer LANGUAGE sql "
                 f"AS 'SELECT {newer}'")
    conn.execute("DELETE FROM public.sitekb_schema_repeatables WHERE name = 'sitekb_api.schema_version'")
    try:
        with caplog.at_level("WARNING", logger="sitekb.store.schema"):
            assert store.migrate(conn) == []
        assert conn.execute("SELECT sitekb_api.schema_version()").fetchone()[0] == newer   # not taken back
        assert f"at migration {newer}, newer than this sitekb" in caplog.text
    finally:
        conn.execute("DELETE FROM public.sitekb_schema_migrations WHERE version = %s", (newer,))
        store.migrate(conn)
