"""The read-only role frontends use: what it may not do, and what it sees while aliases move."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest
from pgvector import Vector

from sitekb import store
from sitekb.store import snapshots
from tests.db.factory import Page, make_snapshot, random_pages, reader_connection


@pytest.fixture
def reader(conn, database_url):
    make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    connection = reader_connection(conn, database_url)
    yield connection
    connection.close()


def _denied(reader, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute(statement)


def test_the_reader_cannot_read_raw_pages_documents_quarantine_or_internals(reader):
    for table in ("sitekb.pages", "sitekb.documents", "sitekb.chunks", "sitekb.embedding_cache", "sitekb.runs",
                  "sitekb.snapshots", "sitekb.aliases", "sitekb.alias_events", "sitekb.exclusions",
                  "public.sitekb_schema_migrations"):
        _denied(reader, f"SELECT * FROM {table} LIMIT 1")
    # The quarantine is documents with status 'quarantined' (and their approvals).
    _denied(reader, "SELECT url FROM sitekb.documents WHERE status = 'quarantined'")
    _denied(reader, "SELECT * FROM sitekb.search_table('snap_1', 'keyword', 'lead', NULL, 5)")


def test_the_reader_cannot_read_any_snapshot_table_directly(reader, conn):
    unpublished = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    published = snapshots.resolve(conn, "s")
    for snap in (unpublished, published):
        _denied(reader, f"SELECT * FROM sitekb_snapshots.{snap.table_name}")
        _denied(reader, f"SELECT * FROM sitekb_snap_{snap.snapshot_id}.chunks")   # the API's view over it
        _denied(reader, f"CREATE TABLE sitekb_snap_{snap.snapshot_id}.chunks2 (x int)")
    with pytest.raises(psycopg.errors.NoDataFound):
        reader.execute("SELECT * FROM sitekb_api.search('s', query => 'lead', mode => 'keyword', snapshot_id => %s)",
                       (unpublished.snapshot_id,))


def test_the_reader_cannot_write_or_move_aliases(reader, conn):
    published = snapshots.resolve(conn, "s")
    statements = [
        "INSERT INTO sitekb.aliases (site, alias, snapshot_id) VALUES ('s', 'evil', 1)",
        "UPDATE sitekb.aliases SET snapshot_id = 1",
        "DELETE FROM sitekb.snapshots",
        f"DELETE FROM sitekb_snapshots.{published.table_name}",
        f"DROP TABLE sitekb_snapshots.{published.table_name}",
        "CREATE TABLE sitekb_api.mine (x int)",
        "CREATE TABLE sitekb.mine (x int)",
        "INSERT INTO sitekb_api.aliases VALUES ('s', 'evil', 1, now())",
        "UPDATE sitekb_api.aliases SET snapshot_id = 1",  # a simple view: updatable, but not by the reader
        "CREATE FUNCTION sitekb_api.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ]
    for statement in statements:
        _denied(reader, statement)
    assert conn.execute("SELECT count(*) FROM sitekb.aliases").fetchone()[0] == 1


def test_the_api_functions_are_definer_rights_with_a_fixed_search_path(conn):
    rows = conn.execute(
        """SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'sitekb_api'""").fetchall()
    assert {r[0] for r in rows} >= {"search", "search_pages", "resolve_snapshot", "schema_version"}
    for name, definer, config in rows:
        assert definer, name
        assert any(c.startswith("search_path=pg_catalog") and c.endswith("pg_temp") for c in config), (name, config)
    public = conn.execute(
        "SELECT has_function_privilege('public', 'sitekb_api.search(text, text, vector, integer, text, text, "
        "bigint, text, text[], text, date, date, integer, text, float8)', 'EXECUTE')").fetchone()[0]
    assert public is False   # only sitekb_reader (and the owner) may call it


def test_a_reader_never_sees_an_error_or_a_mixed_answer_while_aliases_move(conn, database_url):
    """One thread queries as the reader in a loop while another publishes and rolls back."""
    dims = 8
    # Two snapshots whose every chunk is tagged with its own snapshot, so a mixed answer shows.
    snaps = []
    for version in ("A", "B"):
        pages = [Page(f"https://s.example/{version}/p{p}.html", f"{version} {p}",
                      [f"lead scoring note {c} version {version}" for c in range(4)]) for p in range(20)]
        snaps.append(make_snapshot(conn, "s", pages, dims=dims, seed=ord(version)))
    a, b = snaps
    snapshots.publish(conn, a.snapshot_id, actor="test")
    snapshots.publish(conn, b.snapshot_id, actor="test")
    reader = reader_connection(conn, database_url)
    query = Vector(np.ones(dims, dtype=np.float32) / np.sqrt(dims))
    stop = threading.Event()
    answers: list[tuple[set, set]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set() or len(answers) < 50:
                for mode in ("vector", "keyword", "hybrid"):
                    rows = reader.execute(
                        "SELECT snapshot_id, url FROM sitekb_api.search('s', query => 'lead scoring', "
                        "query_embedding => %s, k => 10, mode => %s)", (query, mode)).fetchall()
                    answers.append(({r[0] for r in rows}, {r[1].split("/")[3] for r in rows}))
                if len(answers) > 3000:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    moves = 0
    with psycopg.connect(database_url, autocommit=True) as mover:
        from pgvector.psycopg import register_vector

        register_vector(mover)
        for i in range(60):
            if i % 2 == 0:
                snapshots.rollback(mover, "s", actor="test", reason="flip")
            else:
                live = snapshots.resolve(mover, "s").snapshot_id
                snapshots.publish(mover, a.snapshot_id if live == b.snapshot_id else b.snapshot_id, actor="test")
            moves += 1
    stop.set()
    thread.join(timeout=120)
    reader.close()
    assert not errors, errors[0]
    assert moves == 60 and len(answers) >= 50
    for ids, versions in answers:
        assert len(ids) == 1 and len(versions) == 1, (ids, versions)     # one snapshot per answer
        (sid,), (version,) = ids, versions
        assert (sid, version) in {(a.snapshot_id, "A"), (b.snapshot_id, "B")}
    assert {next(iter(ids)) for ids, _ in answers} <= {a.snapshot_id, b.snapshot_id}


def test_a_missing_snapshot_view_never_reads_the_callers_temp_objects_and_migrate_restores_it(reader, conn):
    """The API's search reads an unqualified "chunks" as its owner. If the snapshot's view schema is
    missing, a reader's own temp view of that name must not be read (it could call any function with
    the owner's rights): the search says what is wrong, and the next migrate gives the view back."""
    live = snapshots.resolve(conn, "s")
    query = Vector(np.ones(8, dtype=np.float32))
    expected = reader.execute("SELECT chunk_id FROM sitekb_api.search('s', query_embedding => %s, k => 3)",
                              (query,)).fetchall()
    assert len(expected) == 3
    reader.execute("""CREATE TEMP VIEW chunks AS
                      SELECT 'hijacked'::text AS chunk_id, ''::text AS url, ''::text AS title,
                             '{}'::text[] AS heading_path, ''::text AS content, ''::text AS language,
                             '{}'::text[] AS tags, ''::text AS published,
                             '[1,1,1,1,1,1,1,1]'::vector AS embedding""")
    conn.execute(f"DROP SCHEMA sitekb_snap_{live.snapshot_id} CASCADE")   # as a pre-0009 worker's build
    for _ in range(3):   # and again with whatever plan the session cached
        with pytest.raises(psycopg.errors.NoDataFound, match=f"snapshot {live.snapshot_id} has no search view"):
            reader.execute("SELECT chunk_id FROM sitekb_api.search('s', query_embedding => %s, k => 3)", (query,))
    store.migrate(conn)
    for _ in range(3):
        got = reader.execute("SELECT chunk_id FROM sitekb_api.search('s', query_embedding => %s, k => 3)",
                             (query,)).fetchall()
        assert got == expected


def test_the_reader_has_bounded_connections_queries_and_lock_waits(reader, conn):
    limit = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'sitekb_reader'").fetchone()[0]
    assert 0 < limit <= 64
    settings = dict(reader.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', 'lock_timeout', "
        "'idle_in_transaction_session_timeout')").fetchall())
    # The role's defaults: a frontend's session starts with them (Postgres lets a session change them,
    # so they bound a well-behaved client's runaway query; the connection limit binds everyone).
    assert settings == {"statement_timeout": "15000", "lock_timeout": "1000",
                        "idle_in_transaction_session_timeout": "60000"}


def test_the_reader_cannot_take_the_locks_sitekb_writes_under(reader, conn, database_url, demo_config):
    """Advisory locks are open to every role, so sitekb does not use them: a reader holding the keys sitekb
    once used (or any other) stalls nothing, and it cannot lock the rows sitekb's writers lock."""
    from sitekb import engine
    from sitekb.settings import Settings
    from sitekb.store import schema

    reader.execute("SELECT pg_advisory_lock(hashtext('sitekb.aliases'), hashtext('s'))")
    reader.execute("SELECT pg_advisory_lock(hashtext('sitekb.runs'), hashtext('demo'))")
    reader.execute("SELECT pg_advisory_lock(%s)", (schema.LOCK,))
    candidate = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    snapshots.publish(conn, candidate.snapshot_id)            # no wait: nobody holds the site's lock row
    assert engine.start(conn, Settings.from_env(), demo_config, "unblocked-run", {}).status == "running"
    assert schema.migrate(conn) == []
    for statement in ("SELECT 1 FROM sitekb.locks FOR UPDATE", "INSERT INTO sitekb.locks (key) VALUES ('x')"):
        _denied(reader, statement)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
        reader.execute("LOCK TABLE sitekb.locks")
    reader.execute("SELECT pg_advisory_unlock_all()")


def test_a_writer_waits_a_bounded_time_for_a_lock_and_names_the_holder(conn, database_url, monkeypatch):
    """Another sitekb session (an operator's stuck rollback, say) holding a site's lock: the writer fails
    in time, says who holds it and how to end it, and its connection stays usable."""
    from sitekb.errors import SitekbError
    from sitekb.store import locks

    make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    candidate = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    monkeypatch.setattr(locks, "WAIT", "300ms")
    with psycopg.connect(database_url, autocommit=True, application_name="stuck-operator") as other:
        with other.transaction():
            locks.hold(other, "a stuck rollback", "sitekb.aliases", "s")
            with pytest.raises(SitekbError, match=r"moving an alias of site 's' waited 300ms for its lock, held by "
                                                  r"role \S+, application stuck-operator, pid \d+ .*pg_terminate_backend"):
                snapshots.publish(conn, candidate.snapshot_id)
            assert conn.execute("SELECT 1").fetchone() == (1,)
    snapshots.publish(conn, candidate.snapshot_id)


def test_the_reader_cannot_create_large_objects(reader):
    for statement in ("SELECT lo_create(0)", "SELECT lo_creat(-1)", "SELECT lo_from_bytea(0, 'x'::bytea)"):
        _denied(reader, statement)
