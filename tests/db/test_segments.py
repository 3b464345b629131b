"""Snapshots as manifests of immutable segments (sitekb/store/segments.py, migration 0021).

A refresh writes one delta segment and tombstones; searches over a manifest rank
exactly as one table holding the same rows; compaction and retention keep the
live snapshot answering, with readers connected, through kills.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from sitekb import store
from sitekb.store import segments, snapshot_tables, snapshots
from tests.db.factory import TOPICS, Page, make_snapshot, reader_connection

EMBEDDING = "array_fill(0.3, ARRAY[8])::vector"


def _pages(edit: int = 0, drop: bool = False, add: bool = False, only: list[int] | None = None) -> list[Page]:
    """The topics, with the first ``edit`` pages' (or the ``only`` pages') second chunk rewritten,
    the last page dropped, or a page added."""
    pages = [Page(p.url, p.title, list(p.chunks), list(p.headings), list(p.tags), p.language, p.published)
             for p in TOPICS]
    for i in (range(edit) if only is None else only):
        pages[i].chunks[1] = f"{pages[i].chunks[1]} Revised in edition {edit}."
    if drop:
        pages.pop()
    if add:
        pages.append(Page("https://kb.example/churn.html", "Churn", ["Churn is the share of customers lost.",
                                                                     "Win-back campaigns target churned users."],
                          headings=["Retention"], tags=["growth"]))
    return pages


def _rows(conn, snap) -> set[tuple]:
    return set(conn.execute(f"SELECT chunk_id, url, title, seq, content, embedding::text, tsv::text "
                            f"FROM sitekb_snapshots.{snap.table_name}").fetchall())


def _search(conn, site: str, mode: str, question: str = "spam bots test weeks", k: int = 20) -> list[tuple]:
    rows = conn.execute(
        f"SELECT chunk_id, round(score::numeric, 5) FROM sitekb_api.search(%s, query => %s, "
        f"query_embedding => {EMBEDDING}, mode => %s, k => %s)", (site, question, mode, k)).fetchall()
    return rows


def test_a_refresh_writes_one_delta_and_tombstones_and_shares_the_base(conn):
    first = make_snapshot(conn, "seg", _pages(), publish_as="production")
    second = make_snapshot(conn, "seg", _pages(edit=2, drop=True, add=True), publish_as="production")
    before, after = segments.manifest(conn, first.snapshot_id), segments.manifest(conn, second.snapshot_id)
    assert [s.kind for s in before] == ["base"] and [s.kind for s in after] == ["base", "delta"]
    assert after[0].segment_id == before[0].segment_id               # shared, not copied
    # The delta holds the two rewritten chunks and the new page's two; the base's tombstones are
    # the two old versions and the dropped page's two chunks.
    assert (after[1].rows, after[0].tombstones, after[1].tombstones) == (4, 4, 0)
    assert second.counts["segments"] == 2 and second.counts["tombstones"] == 4
    # The delta's rows are appended to its base's table, under its own segment id.
    assert after[1].stored_in == after[0].segment_id
    assert dict(conn.execute(f"SELECT segment_id, count(*) FROM sitekb_snapshots.seg_{after[0].segment_id} "
                             "GROUP BY 1").fetchall()) == {after[0].segment_id: 12, after[1].segment_id: 4}
    # The new snapshot holds exactly what a full build of the same pages holds.
    single = make_snapshot(conn, "seg-single", _pages(edit=2, drop=True, add=True))
    assert [s.kind for s in segments.manifest(conn, single.snapshot_id)] == ["base"]
    assert _rows(conn, second) == _rows(conn, single)
    # The older snapshot never changed.
    assert _rows(conn, first) == _rows(conn, make_snapshot(conn, "seg-first", _pages()))


def test_an_unchanged_refresh_shares_every_segment_and_writes_none(conn):
    first = make_snapshot(conn, "same", _pages(), publish_as="production")
    second = make_snapshot(conn, "same", _pages())
    assert [s.segment_id for s in segments.manifest(conn, second.snapshot_id)] == \
        [s.segment_id for s in segments.manifest(conn, first.snapshot_id)]
    assert conn.execute("SELECT count(*) FROM sitekb.segments").fetchone()[0] == 1


def test_a_change_of_order_or_title_replaces_the_rows_it_touches(conn):
    make_snapshot(conn, "meta", _pages(), publish_as="production")
    pages = _pages()
    pages[0].title = "Lead scoring, explained"
    pages[1].chunks.reverse()
    refreshed = make_snapshot(conn, "meta", pages)
    delta = segments.manifest(conn, refreshed.snapshot_id)[1]
    assert delta.rows == 4                                             # 2 retitled + 2 reordered
    titles = {r[0] for r in conn.execute(f"SELECT DISTINCT title FROM sitekb_snapshots.{refreshed.table_name} "
                                         "WHERE url LIKE '%%lead-scoring%%'")}
    assert titles == {"Lead scoring, explained"}


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_a_manifest_ranks_as_one_table_with_the_same_rows(conn, mode):
    for edition in range(4):       # a base and three deltas, each edition rewriting one more page
        make_snapshot(conn, "many", _pages(edit=1, only=list(range(1, edition + 1)), add=edition >= 2),
                      publish_as="production")
    live = snapshots.resolve(conn, "many").snapshot_id
    assert [s.kind for s in segments.manifest(conn, live)] == ["base", "delta", "delta", "delta"]
    # However many deltas, a top-k reads one HNSW scan, of the base's table.
    conn.execute("SET enable_seqscan = off")     # 12 rows: a scan would do; the plan's shape is what is tested
    plan = "\n".join(r[0] for r in conn.execute(
        f"EXPLAIN SELECT chunk_id FROM sitekb_snap_{live}.chunks ORDER BY embedding <=> {EMBEDDING} LIMIT 5"))
    conn.execute("RESET enable_seqscan")
    assert "Append" not in plan and plan.count("_embedding_idx") == 1, plan
    single = make_snapshot(conn, "one", _pages(edit=1, only=[1, 2, 3], add=True), publish_as="production")
    assert len(segments.manifest(conn, single.snapshot_id)) == 1
    assert _search(conn, "many", mode) == _search(conn, "one", mode)
    # BM25 statistics adjusted by the deltas are the ones a full count gives.
    terms = lambda s: dict(conn.execute(f"SELECT lexeme, df FROM sitekb_snapshots.snap_{s}_terms"))  # noqa: E731
    assert terms(live) == terms(single.snapshot_id)
    corpus = "SELECT corpus_chunks, round(corpus_length::numeric, 3) FROM sitekb.snapshots WHERE snapshot_id = %s"
    assert conn.execute(corpus, (live,)).fetchone() == conn.execute(corpus, (single.snapshot_id,)).fetchone()


def test_tombstoned_rows_never_come_back_in_any_mode(conn):
    make_snapshot(conn, "gone", _pages(), publish_as="production")
    make_snapshot(conn, "gone", _pages(edit=6), publish_as="production")
    for mode in ("vector", "keyword", "hybrid"):
        texts = [r[0] for r in conn.execute(
            f"SELECT content FROM sitekb_api.search('gone', query => 'points sales gmail weeks bots reserve', "
            f"query_embedding => {EMBEDDING}, mode => %s, k => 100)", (mode,))]
        old = [p.chunks[1] for p in TOPICS]
        assert not set(texts) & set(old), mode
        assert mode == "keyword" or len(texts) == 12


def test_a_model_change_starts_a_new_base_and_older_snapshots_keep_theirs(conn):
    old = make_snapshot(conn, "model", _pages(), publish_as="production")
    new = make_snapshot(conn, "model", _pages(edit=1), dims=16, publish_as="production")
    assert [s.kind for s in segments.manifest(conn, new.snapshot_id)] == ["base"]
    assert segments.manifest(conn, new.snapshot_id)[0].segment_id != segments.manifest(conn, old.snapshot_id)[0].segment_id
    # Each answers with its own dimension.
    assert len(conn.execute(f"SELECT 1 FROM sitekb_api.search('model', query_embedding => {EMBEDDING}, "
                            f"snapshot_id => {old.snapshot_id}, k => 3)").fetchall()) == 3
    assert len(conn.execute("SELECT 1 FROM sitekb_api.search('model', query_embedding => "
                            "array_fill(0.3, ARRAY[16])::vector, k => 3)").fetchall()) == 3


def test_a_snapshot_of_an_older_bm25_recipe_is_no_base_and_keeps_answering(conn):
    old = make_snapshot(conn, "recipe", _pages(), publish_as="production")
    keyword_before = _search(conn, "recipe", "keyword")
    conn.execute("UPDATE sitekb.snapshots SET bm25_recipe = 1 WHERE snapshot_id = %s", (old.snapshot_id,))
    new = make_snapshot(conn, "recipe", _pages(edit=1), publish_as="production")
    # Its postings counted terms another way: the refresh builds a new base, recorded with today's recipe.
    assert [s.kind for s in segments.manifest(conn, new.snapshot_id)] == ["base"]
    assert conn.execute("SELECT bm25_recipe = sitekb.bm25_recipe() FROM sitekb.snapshots WHERE snapshot_id = %s",
                        (new.snapshot_id,)).fetchone()[0]
    pinned = conn.execute(f"SELECT chunk_id, round(score::numeric, 5) FROM sitekb_api.search('recipe', "
                          f"query => 'spam bots test weeks', mode => 'keyword', snapshot_id => {old.snapshot_id}, "
                          f"k => 20)").fetchall()
    assert pinned == keyword_before
    third = make_snapshot(conn, "recipe", _pages(edit=2), publish_as="production")
    assert [s.kind for s in segments.manifest(conn, third.snapshot_id)] == ["base", "delta"]


def test_retention_drops_a_segment_only_when_no_kept_snapshot_lists_it(conn):
    built = [make_snapshot(conn, "keep", _pages(edit=e, add=e == 3), publish_as="production") for e in range(4)]
    lists = {s.snapshot_id: {g.segment_id for g in segments.manifest(conn, s.snapshot_id)} for s in built}
    dropped = snapshots.apply_retention(conn, "keep", keep=1)
    assert dropped == [s.snapshot_id for s in built[:3]]
    kept = lists[built[-1].snapshot_id]
    remaining = {r[0] for r in conn.execute("SELECT segment_id FROM sitekb.segments")}
    assert remaining == kept                                           # the base and the live deltas stay
    for segment_id in set().union(*lists.values()) - kept:
        assert conn.execute("SELECT to_regclass(%s)", (f"sitekb_snapshots.seg_{segment_id}",)).fetchone()[0] is None
    assert len(_search(conn, "keep", "vector")) == 14


def test_compaction_merges_into_one_base_with_the_same_answers_while_a_reader_searches(conn, database_url):
    for edition in range(4):
        make_snapshot(conn, "cmp", _pages(edit=edition + 1, add=edition == 2), publish_as="production")
    live = snapshots.resolve(conn, "cmp").snapshot_id
    older = [r[0] for r in conn.execute("SELECT snapshot_id FROM sitekb.snapshots WHERE site = 'cmp' "
                                        "AND snapshot_id <> %s", (live,))]
    before = {mode: _search(conn, "cmp", mode) for mode in ("vector", "keyword", "hybrid")}
    reader = reader_connection(conn, database_url)
    answers, errors, stop = [], [], threading.Event()

    def search():
        while not stop.is_set():
            try:
                answers.append(reader.execute(
                    f"SELECT chunk_id FROM sitekb_api.search('cmp', query_embedding => {EMBEDDING}, k => 5)"
                ).fetchall())
            except psycopg.Error as exc:   # pragma: no cover - the assertion reports it
                errors.append(exc)

    thread = threading.Thread(target=search)
    thread.start()
    try:
        result = segments.compact(conn, live, force=True)
    finally:
        stop.set()
        thread.join()
        reader.close()
    assert errors == [] and answers and all(a == answers[0] for a in answers)
    assert result["compacted"] and len(segments.manifest(conn, live)) == 1
    assert {mode: _search(conn, "cmp", mode) for mode in before} == before
    # The older snapshots still list the old segments, which stay; once retention drops them, they go.
    assert all(segments.manifest(conn, s) for s in older)
    snapshots.apply_retention(conn, "cmp", keep=1)
    [only] = segments.manifest(conn, live)
    assert {r[0] for r in conn.execute("SELECT segment_id FROM sitekb.segments")} == {only.segment_id}


def test_compaction_is_due_by_share_or_count_and_otherwise_does_nothing(conn):
    make_snapshot(conn, "due", _pages(), publish_as="production")
    small = make_snapshot(conn, "due", _pages(add=True))
    assert segments.compaction_due(segments.manifest(conn, small.snapshot_id)) is None       # 2 rows of 12: 17%
    large = make_snapshot(conn, "due", _pages(edit=2, add=True))
    assert "50%" in segments.compaction_due(segments.manifest(conn, large.snapshot_id))   # 4 + 2 of 12
    result = segments.compact(conn, make_snapshot(conn, "due-alone", _pages()).snapshot_id)
    assert not result["compacted"] and result["due"] is None           # a base alone: nothing to merge
    manifest = [segments.Segment(1, "base", 0, 1000, 10, None, None)] + \
               [segments.Segment(i, "delta", i, 5, 0, None, None) for i in range(2, 2 + segments.COMPACT_DELTAS)]
    assert "delta segments" in segments.compaction_due(manifest)
    assert segments.compaction_due(manifest[:3]) is None


def _wait_until_blocked(conn, pid: int) -> None:
    for _ in range(200):
        if conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == ("Lock",):
            return
        time.sleep(0.05)
    raise AssertionError("the session never waited on the lock")


def _killed(database_url, work, hold: str) -> None:
    """Run ``work(connection)`` in a thread; kill its backend while it waits on ``hold``, locked here."""
    holder = store.connect(database_url)
    worker = store.connect(database_url)
    pid = worker.info.backend_pid
    failures = []
    holder.execute("BEGIN")
    holder.execute(hold)
    thread = threading.Thread(target=lambda: _catch(failures, work, worker))
    thread.start()
    _wait_until_blocked(holder, pid)
    holder.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join()
    holder.execute("ROLLBACK")
    holder.close()
    assert failures and isinstance(failures[0], psycopg.OperationalError)


def _catch(failures, work, worker):
    try:
        work(worker)
    except Exception as exc:  # noqa: BLE001 - the caller checks what it was
        failures.append(exc)


def test_a_kill_during_the_delta_load_leaves_the_live_snapshot_and_a_rerun_finishes(conn, database_url):
    make_snapshot(conn, "kill", _pages(), publish_as="production")
    refreshed = make_snapshot(conn, "kill", _pages(edit=2), state="building")
    snapshot_tables.drop(conn, refreshed.snapshot_id)                 # as before its build
    segments_before = {r[0] for r in conn.execute("SELECT segment_id FROM sitekb.segments")}
    run_id, model = refreshed.run_id, refreshed.embedding_model
    # The load joins the full-text cache: while another session locks it, the build waits there.
    _killed(database_url, lambda c: snapshot_tables.build(c, refreshed.snapshot_id, run_id, model, 8),
            "LOCK TABLE sitekb.fulltext_cache IN ACCESS EXCLUSIVE MODE")
    assert {r[0] for r in conn.execute("SELECT segment_id FROM sitekb.segments")} == segments_before
    assert len(_search(conn, "kill", "vector")) == 12
    built = snapshot_tables.build(conn, refreshed.snapshot_id, run_id, model, 8)
    assert built["delta_rows"] == 2 and built["segments"] == 2


def _refresh_to_build(conn, site: str, pages: list[Page]):
    """A published snapshot of the topics, and a refresh of ``pages`` ready to build again (as before its build)."""
    make_snapshot(conn, site, _pages(), publish_as="production")
    refreshed = make_snapshot(conn, site, pages, state="building")
    snapshot_tables.drop(conn, refreshed.snapshot_id)
    return refreshed


def _build(conn, snap) -> dict:
    return snapshot_tables.build(conn, snap.snapshot_id, snap.run_id, snap.embedding_model, 8)


def test_a_large_delta_is_appended_over_several_connections_as_one_connection_appends_it(conn, monkeypatch):
    monkeypatch.setattr(segments, "PARALLEL_MIN_ROWS", 1)
    refreshed = _refresh_to_build(conn, "par", _pages(edit=3, add=True))
    built = _build(conn, refreshed)
    assert built["load_connections"] == segments.LOAD_CONNECTIONS == 2 and built["delta_rows"] == 5
    monkeypatch.setattr(segments, "PARALLEL_MIN_ROWS", 10**9)
    alone = _refresh_to_build(conn, "par-alone", _pages(edit=3, add=True))
    assert _build(conn, alone)["load_connections"] == 1
    assert _rows(conn, snapshots.get(conn, refreshed.snapshot_id)) == _rows(conn, snapshots.get(conn, alone.snapshot_id))
    terms = lambda s: dict(conn.execute(f"SELECT lexeme, df FROM sitekb_snapshots.snap_{s}_terms"))  # noqa: E731
    assert terms(refreshed.snapshot_id) == terms(alone.snapshot_id)


def test_a_build_that_fails_after_a_parallel_load_leaves_its_rows_unlisted_and_its_retry_drops_them(
        conn, monkeypatch):
    monkeypatch.setattr(segments, "PARALLEL_MIN_ROWS", 1)
    refreshed = _refresh_to_build(conn, "parfail", _pages(edit=3))
    index = segments.index

    def fail(*args, **kwargs):
        raise RuntimeError("the build stopped after its load")

    monkeypatch.setattr(segments, "index", fail)
    with pytest.raises(RuntimeError):
        _build(conn, refreshed)
    conn.rollback()
    # The load committed its segment and rows over its own connections; no snapshot lists them.
    (left, base), = conn.execute(
        "SELECT segment_id, stored_in FROM sitekb.segments WHERE built_for = %s", (refreshed.snapshot_id,)).fetchall()
    assert conn.execute(f"SELECT count(*) FROM sitekb_snapshots.seg_{base} WHERE segment_id = %s",
                        (left,)).fetchone()[0] == 3
    # Another site's retention leaves a building snapshot's segment to its build; readers never see it.
    assert left not in segments.drop_unreferenced(conn)
    conn.commit()
    assert len(_search(conn, "parfail", "vector")) == 12
    monkeypatch.setattr(segments, "index", index)
    built = _build(conn, refreshed)
    assert built["delta_rows"] == 3 and built["segments"] == 2
    assert not conn.execute("SELECT 1 FROM sitekb.segments WHERE segment_id = %s", (left,)).fetchone()
    assert conn.execute(f"SELECT count(*) FROM sitekb_snapshots.seg_{base} WHERE segment_id = %s",
                        (left,)).fetchone()[0] == 0


def test_a_kill_of_a_delta_load_connection_fails_the_build_and_a_rerun_finishes(conn, database_url, monkeypatch):
    monkeypatch.setattr(segments, "PARALLEL_MIN_ROWS", 1)
    refreshed = _refresh_to_build(conn, "parkill", _pages(edit=4))
    holder = store.connect(database_url)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE sitekb.fulltext_cache IN ACCESS EXCLUSIVE MODE")
    failures: list[Exception] = []
    builder = store.connect(database_url)
    thread = threading.Thread(target=lambda: _catch(failures, lambda c: _build(c, refreshed), builder))
    thread.start()
    for _ in range(200):   # both load connections wait on the lock
        holder.execute("SELECT pg_stat_clear_snapshot()")   # activity is read once per transaction otherwise
        waiting = [pid for (pid,) in holder.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'sitekb delta load' "
            "AND wait_event_type = 'Lock'")]
        if len(waiting) == 2:
            break
        time.sleep(0.05)
    assert len(waiting) == 2
    holder.execute("SELECT pg_terminate_backend(%s)", (waiting[0],))
    holder.execute("ROLLBACK")
    holder.close()
    thread.join()
    builder.close()
    assert failures and isinstance(failures[0], psycopg.OperationalError)
    assert len(_search(conn, "parkill", "vector")) == 12
    built = _build(conn, refreshed)
    assert built["delta_rows"] == 4 and built["segments"] == 2
    listed = {s.segment_id for s in segments.manifest(conn, refreshed.snapshot_id)}
    base = min(listed)
    assert {r[0] for r in conn.execute(f"SELECT DISTINCT segment_id FROM sitekb_snapshots.seg_{base}")} <= \
        listed | {s.segment_id for s in segments.manifest(conn, snapshots.resolve(conn, "parkill").snapshot_id)}


def test_a_kill_during_compaction_leaves_the_snapshot_answering_and_a_rerun_compacts(conn, database_url):
    make_snapshot(conn, "kc", _pages(), publish_as="production")
    live = make_snapshot(conn, "kc", _pages(edit=3), publish_as="production").snapshot_id
    before = _search(conn, "kc", "hybrid")
    listed = segments.manifest(conn, live)
    # The swap replaces the snapshot's view: while a reader's transaction holds it, compaction waits there.
    _killed(database_url, lambda c: segments.compact(c, live, force=True),
            f"LOCK TABLE sitekb_snapshots.snap_{live} IN ACCESS SHARE MODE")
    assert segments.manifest(conn, live) == listed
    assert {r[0] for r in conn.execute("SELECT segment_id FROM sitekb.segments")} == {s.segment_id for s in listed}
    assert _search(conn, "kc", "hybrid") == before
    assert segments.compact(conn, live, force=True)["compacted"]
    assert _search(conn, "kc", "hybrid") == before


def test_a_snapshot_table_built_before_segments_becomes_its_base_on_migrate(conn):
    snap = make_snapshot(conn, "legacy", _pages(), publish_as="production")
    before = _search(conn, "legacy", "hybrid")
    # As sitekb built it before migration 0021: one table with the rows, no manifest.
    [base] = segments.manifest(conn, snap.snapshot_id)
    conn.execute(f"CREATE TABLE sitekb_snapshots.legacy AS SELECT * FROM sitekb_snapshots.snap_{snap.snapshot_id}")
    segments.drop_snapshot(conn, snap.snapshot_id)
    segments.drop_unreferenced(conn)
    conn.execute(f"ALTER TABLE sitekb_snapshots.legacy RENAME TO snap_{snap.snapshot_id}")
    conn.execute(f"CREATE INDEX ON sitekb_snapshots.snap_{snap.snapshot_id} USING hnsw (embedding vector_cosine_ops)")
    conn.execute("UPDATE sitekb.snapshots SET corpus_chunks = NULL, corpus_length = NULL")
    assert conn.execute("SELECT count(*) FROM sitekb.segments").fetchone()[0] == 0
    store.migrate(conn)   # sitekb.ensure_search_views adopts it
    [adopted] = segments.manifest(conn, snap.snapshot_id)
    assert adopted.kind == "base" and adopted.rows == 12 and adopted.segment_id != base.segment_id
    assert _search(conn, "legacy", "hybrid") == before
    # Its next refresh builds a delta on it.
    refreshed = make_snapshot(conn, "legacy", _pages(edit=1))
    assert [s.segment_id for s in segments.manifest(conn, refreshed.snapshot_id)][0] == adopted.segment_id


def test_the_cli_shows_a_snapshots_segments_and_compacts_what_is_due(conn, capsys):
    import json

    from sitekb.cli import main

    make_snapshot(conn, "cli", _pages(), publish_as="production")
    live = make_snapshot(conn, "cli", _pages(edit=3, add=True), publish_as="production")
    assert main(["snapshots", "show", str(live.snapshot_id)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["kind"] for s in shown["segments"]] == ["base", "delta"]
    assert shown["segments"][0]["tombstones"] == 3 and shown["segments"][1]["live"] == 5
    assert main(["snapshots", "compact", "--site", "cli", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["compacted"] and "67%" in result["due"] and result["rows"] == 14
    assert main(["snapshots", "compact", "--site", "cli"]) == 0
    assert "not due" in capsys.readouterr().out


def test_the_maintenance_task_compacts_every_site_whose_compaction_is_due(conn, monkeypatch):
    from sitekb.orchestration import tasks

    monkeypatch.setattr(tasks, "_prepare", lambda: None)
    make_snapshot(conn, "m1", _pages(), publish_as="production")
    due = make_snapshot(conn, "m1", _pages(edit=4), publish_as="production")
    quiet = make_snapshot(conn, "m2", _pages(), publish_as="production")
    results = tasks.compact_due()
    assert {(r["site"], r["snapshot_id"], r["compacted"]) for r in results} == \
        {("m1", due.snapshot_id, True), ("m2", quiet.snapshot_id, False)}
    assert len(segments.manifest(conn, due.snapshot_id)) == 1
