"""The schema comes only from the versioned migrations, applied once each, in order."""

from __future__ import annotations

import threading

from sitekb import db


def test_migrations_are_numbered_without_gaps():
    versions = [v for v, _, _ in db.migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_is_idempotent(conn):
    assert db.migrate(conn) == []
    applied = [r[0] for r in conn.execute("SELECT version FROM public.sitekb_schema_migrations ORDER BY 1")]
    assert applied == [v for v, _, _ in db.migrations()]
    tables = {r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sitekb'")}
    assert {"runs", "pages", "exclusions", "documents", "chunks", "embedding_cache", "snapshots",
            "aliases", "alias_events"} <= tables


def test_0009_gives_snapshots_built_before_it_their_search_view(conn):
    from tests.db.factory import make_snapshot, random_pages

    snap = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    retired = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    conn.execute(f"DROP TABLE sitekb_snapshots.{retired.table_name} CASCADE")   # as if retention had run
    for sid in (snap.snapshot_id, retired.snapshot_id):
        conn.execute(f"DROP SCHEMA sitekb_snap_{sid} CASCADE")                   # as built before 0009
    conn.execute(next(text for version, _, text in db.migrations() if version == 9))
    assert conn.execute(f"SELECT count(*) FROM sitekb_snap_{snap.snapshot_id}.chunks").fetchone()[0] == 12
    assert conn.execute("SELECT to_regnamespace(%s)", (f"sitekb_snap_{retired.snapshot_id}",)).fetchone()[0] is None


def test_concurrent_first_start_applies_each_migration_once(database_server):
    from tests.conftest import _reset_schema

    _reset_schema(database_server)
    results, errors = [], []

    def start():
        try:
            with db.connection(database_server) as c:
                results.append(db.migrate(c))
        except Exception as exc:  # noqa: BLE001 - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(db.migrations())]


def test_vector_type_round_trips(conn):
    import numpy as np

    row = conn.execute("SELECT %s::vector(3)", (np.array([1.0, 2.0, 3.0], dtype=np.float32),)).fetchone()
    value = row[0].to_list() if hasattr(row[0], "to_list") else list(row[0])
    assert value == [1.0, 2.0, 3.0]


def test_redact_hides_passwords():
    assert db.redact("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"


def test_the_embedded_server_gets_more_shared_memory_once_and_restarts_cleanly(tmp_path):
    import psycopg

    from sitekb import embedded_pg

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
    from sitekb import snapshots

    with conn.transaction():
        sid = snapshots.create_record(conn, site="s", run_id="old", provider="openai", model="m", dimensions=8,
                                      tokenizer="t", config_hash="x", extractor_version="x", chunker_version="x")
    conn.execute("UPDATE sitekb.snapshots SET embedding_base_url = 'https://me:secret@llm.test:8443/v1' "
                 "WHERE snapshot_id = %s", (sid,))
    conn.execute(next(text for version, _, text in db.migrations() if version == 9))
    assert snapshots.get(conn, sid).embedding_base_url == "https://llm.test:8443/v1"
