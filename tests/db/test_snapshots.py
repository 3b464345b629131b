"""Snapshot lifecycle on the real database: publish, rollback, history, pin, retention, diff, the golden gate.

Most tests use small synthetic snapshots (tests/db/factory.py) fed through the
real build; the golden-question gate runs the demo pipeline twice in one
module-scoped database.
"""

from __future__ import annotations

import json

import pytest

from sitekb.store import segments, snapshot_tables, snapshots
from sitekb.cli import main
from sitekb.errors import NotFound, QualityGateFailed, SitekbError
from tests.db.factory import Page, make_snapshot, random_pages


def _alias_target(conn, site: str, alias: str = "production") -> int | None:
    row = conn.execute("SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s", (site, alias)).fetchone()
    return row[0] if row else None


def _table_exists(conn, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"sitekb_snapshots.{table}",)).fetchone()[0]


def test_build_records_lineage_and_indexes(conn):
    snap = make_snapshot(conn, "s", random_pages("s", pages=3, chunks_per_page=2))
    assert snap.state == "validated" and snap.table_name == f"snap_{snap.snapshot_id}"
    assert snap.counts == {"chunks": 6, "documents": 3, "segments": 1, "tombstones": 0}
    assert (snap.embedding_model, snap.dimensions, snap.config_hash) == ("synthetic", 8, "test")
    # Its rows sit in one base segment, indexed after the load; readers read the view snap_<id>.
    [base] = segments.manifest(conn, snap.snapshot_id)
    assert (base.kind, base.rows, base.tombstones, base.built_for) == ("base", 6, 0, snap.snapshot_id)
    indexes = {r[0] for r in conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'sitekb_snapshots' AND tablename = %s",
        (f"seg_{base.segment_id}",))}
    assert any("hnsw" in d and "vector_cosine_ops" in d for d in indexes)
    assert any("gin" in d and "tsv" in d for d in indexes)
    # Rows up to a page stay whole: no vector or full-text vector goes to a TOAST table.
    options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                           (f"sitekb_snapshots.seg_{base.segment_id}",)).fetchone()[0]
    assert options == ["toast_tuple_target=8160"]
    assert conn.execute(f"SELECT count(*) FROM sitekb_snapshots.{snap.table_name}").fetchone()[0] == 6
    # The SQL API's plan-cached search reads the table through this view.
    assert conn.execute(f"SELECT count(*) FROM sitekb_snap_{snap.snapshot_id}.chunks").fetchone()[0] == 6


def test_the_recorded_embedding_server_never_carries_credentials(conn):
    cases = {"https://me:secret@llm.test:8443/v1": "https://llm.test:8443/v1",
             "http://token@[::1]/v1": "http://[::1]/v1", "http://127.0.0.1:8000/v1": "http://127.0.0.1:8000/v1"}
    for given, recorded in cases.items():
        with conn.transaction():
            sid = snapshots.create_record(conn, site="s", run_id=f"r{len(given)}", provider="openai", model="m",
                                          dimensions=8, tokenizer="t", config_hash="x", extractor_version="x",
                                          chunker_version="x", base_url=given, api_key_env="LLM_KEY")
        assert snapshots.get(conn, sid).embedding_base_url == recorded


def test_publish_moves_the_alias_and_records_who_when_why(conn):
    first = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    second = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    previous = snapshots.publish(conn, second.snapshot_id, "production", actor="alice", reason="new pricing copy")
    assert previous == first.snapshot_id
    assert _alias_target(conn, "s") == second.snapshot_id
    assert snapshots.get(conn, first.snapshot_id).state == "retired"
    assert snapshots.get(conn, second.snapshot_id).state == "published"
    event = snapshots.history(conn, "s")[0]
    assert (event["from_snapshot"], event["to_snapshot"], event["actor"], event["reason"]) == \
        (first.snapshot_id, second.snapshot_id, "alice", "new pricing copy")
    assert event["moved_at"] is not None


def test_rollback_returns_to_the_previous_snapshot_and_back(conn):
    a = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    b = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1, publish_as="production")
    assert snapshots.rollback(conn, "s", actor="bob", reason="b is wrong") == (b.snapshot_id, a.snapshot_id)
    assert _alias_target(conn, "s") == a.snapshot_id
    assert snapshots.get(conn, a.snapshot_id).state == "published"
    assert snapshots.get(conn, b.snapshot_id).state == "retired"
    # A second rollback undoes the first.
    assert snapshots.rollback(conn, "s") == (a.snapshot_id, b.snapshot_id)
    moves = [(e["from_snapshot"], e["to_snapshot"], e["reason"]) for e in snapshots.history(conn, "s")]
    assert moves == [(a.snapshot_id, b.snapshot_id, "rollback"), (b.snapshot_id, a.snapshot_id, "b is wrong"),
                     (a.snapshot_id, b.snapshot_id, "factory"), (None, a.snapshot_id, "factory")]


def test_an_owners_decisions_are_in_the_alias_audit_log_and_a_rejection_moves_nothing(conn):
    a = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    b = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1, state="validated")
    snapshots.reject(conn, b.snapshot_id, "production", actor="airflow-user:maria", reason="old pricing page")
    assert _alias_target(conn, "s") == a.snapshot_id
    assert snapshots.get(conn, b.snapshot_id).state == "rejected"
    c = make_snapshot(conn, "s", random_pages("s", seed=2), seed=2, state="validated")
    snapshots.publish(conn, c.snapshot_id, "production", actor="airflow-user:maria", reason="approved: fixed",
                      decision="approved")
    log = [(e["decision"], e["from_snapshot"], e["to_snapshot"], e["actor"], e["reason"])
           for e in snapshots.history(conn, "s")]
    assert log[:2] == [("approved", a.snapshot_id, c.snapshot_id, "airflow-user:maria", "approved: fixed"),
                       ("rejected", a.snapshot_id, b.snapshot_id, "airflow-user:maria", "old pricing page")]
    # A rollback goes back along moves, never to a snapshot an owner turned down.
    assert snapshots.rollback(conn, "s") == (c.snapshot_id, a.snapshot_id)


def test_rollback_without_history_is_a_clear_error(conn):
    make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    with pytest.raises(NotFound, match="no earlier snapshot"):
        snapshots.rollback(conn, "s")
    with pytest.raises(NotFound, match="no snapshot published as 'staging'"):
        snapshots.rollback(conn, "s", "staging")


def test_aliases_are_independent_per_name_and_site(conn):
    a = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    b = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1, publish_as="staging")
    other = make_snapshot(conn, "t", random_pages("t"), publish_as="production")
    assert (_alias_target(conn, "s"), _alias_target(conn, "s", "staging"), _alias_target(conn, "t")) == \
        (a.snapshot_id, b.snapshot_id, other.snapshot_id)
    listed = {r["snapshot_id"]: r["aliases"] for r in snapshots.list_snapshots(conn, "s")}
    assert listed == {a.snapshot_id: ["production"], b.snapshot_id: ["staging"]}


def test_rejected_and_building_snapshots_cannot_be_published(conn):
    rejected = make_snapshot(conn, "s", random_pages("s"), state="rejected")
    building = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1, state="building")
    for snap in (rejected, building):
        with pytest.raises(SitekbError, match=f"it is {snap.state}"):
            snapshots.publish(conn, snap.snapshot_id)
    assert _alias_target(conn, "s") is None


def test_a_published_snapshot_is_never_rebuilt(conn):
    snap = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    with pytest.raises(SitekbError, match="immutable"):
        snapshots.create_record(conn, site="s", run_id=snap.run_id, provider="local", model="synthetic",
                                dimensions=8, tokenizer="t", config_hash="x", extractor_version="x",
                                chunker_version="x")
    assert _table_exists(conn, snap.table_name)


def test_an_unpublished_snapshot_takes_the_lineage_of_its_rebuild(conn):
    rejected = make_snapshot(conn, "s", random_pages("s"), state="rejected")
    again = snapshots.create_record(conn, site="s", run_id=rejected.run_id, provider="openai", model="m2",
                                    dimensions=16, tokenizer="t2", config_hash="new", extractor_version="e2",
                                    chunker_version="c2", base_url="http://127.0.0.1:1/v1", api_key_env="K")
    assert again == rejected.snapshot_id
    snap = snapshots.get(conn, again)
    assert (snap.state, snap.embedding_provider, snap.embedding_model, snap.dimensions, snap.tokenizer,
            snap.config_hash, snap.extractor_version, snap.chunker_version) == \
        ("building", "openai", "m2", 16, "t2", "new", "e2", "c2")


def test_retention_keeps_the_newest_n_plus_aliased_and_pinned(conn):
    made = [make_snapshot(conn, "s", random_pages("s", pages=2, seed=i), seed=i) for i in range(6)]
    ids = [s.snapshot_id for s in made]
    snapshots.publish(conn, ids[0], "production", actor="t")     # oldest, but live
    snapshots.publish(conn, ids[1], "staging", actor="t")
    snapshots.set_pinned(conn, ids[2], True)
    rejected = ids[3]
    snapshots.set_state(conn, rejected, "rejected")
    other_site = make_snapshot(conn, "t", random_pages("t"))
    dropped = snapshots.apply_retention(conn, "s", keep=2)
    assert dropped == [ids[3]]                                    # 4 and 5 are the newest two
    for sid in ids:
        assert _table_exists(conn, f"snap_{sid}") == (sid not in dropped)
    assert snapshots.get(conn, rejected).state == "rejected" and snapshots.get(conn, rejected).table_name is None
    leftover = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'sitekb_snapshots' AND c.relname LIKE %s", (f"snap_{rejected}%",)).fetchone()[0]
    assert leftover == 0                                          # its indexes went with it
    schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ '^sitekb_snap_[0-9]+$'")}
    assert schemas == {f"sitekb_snap_{sid}" for sid in [*ids, other_site.snapshot_id] if sid not in dropped}
    assert _table_exists(conn, other_site.table_name)             # another site is untouched
    # Unpinning lets the next pass drop it.
    snapshots.set_pinned(conn, ids[2], False)
    assert snapshots.apply_retention(conn, "s", keep=2) == [ids[2]]
    assert snapshots.get(conn, ids[2]).state == "retired"
    with pytest.raises(SitekbError, match="cannot be pinned"):
        snapshots.set_pinned(conn, ids[2], True)
    with pytest.raises(SitekbError, match="dropped by retention"):
        snapshots.publish(conn, ids[2])


def test_rollback_fails_cleanly_when_retention_dropped_the_previous_snapshot(conn):
    a = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    make_snapshot(conn, "s", random_pages("s", seed=1), seed=1, publish_as="production")
    c, _ = (make_snapshot(conn, "s", random_pages("s", seed=seed), seed=seed) for seed in (2, 3))
    assert snapshots.apply_retention(conn, "s", keep=1) == [a.snapshot_id, c.snapshot_id]
    assert not _table_exists(conn, a.table_name)
    with pytest.raises(NotFound, match="dropped by retention"):
        snapshots.rollback(conn, "s")


def test_diff_lists_pages_added_removed_changed_and_churn(conn):
    shared = Page("https://s.example/same.html", "Same", ["unchanged text one", "unchanged text two"])
    old = make_snapshot(conn, "s", [
        shared,
        Page("https://s.example/pricing.html", "Pricing", ["price is 10 dollars", "contact sales"]),
        Page("https://s.example/old.html", "Old news", ["an old announcement"]),
    ])
    new = make_snapshot(conn, "s", [
        shared,
        Page("https://s.example/pricing.html", "Pricing", ["price is 12 dollars", "contact sales", "new faq"]),
        Page("https://s.example/launch.html", "Launch", ["we launched", "details"]),
    ], seed=1)
    d = snapshot_tables.diff(conn, old, new)
    assert [p.url for p in d.added] == ["https://s.example/launch.html"]
    assert [p.url for p in d.removed] == ["https://s.example/old.html"]
    assert [(p.url, p.chunks_before, p.chunks_after, p.chunks_added, p.chunks_removed) for p in d.changed] == \
        [("https://s.example/pricing.html", 2, 3, 2, 1)]
    assert d.unchanged_pages == 1
    assert (d.chunks_before, d.chunks_after, d.chunks_added, d.chunks_removed) == (5, 7, 4, 2)
    assert d.churn == 0.4
    assert d.summary()["changed"] == ["https://s.example/pricing.html"]
    first = snapshot_tables.diff(conn, None, old)
    assert len(first.added) == 3 and first.chunks_added == 5


def test_cli_snapshot_commands(conn, database_url, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    old = make_snapshot(conn, "s", [Page("https://s.example/a.html", "Alpha", ["alpha text"]),
                                    Page("https://s.example/b.html", "Beta", ["beta text"])],
                        publish_as="production")
    new = make_snapshot(conn, "s", [Page("https://s.example/a.html", "Alpha", ["alpha text, revised"])], seed=1)

    assert main(["snapshots", "diff", str(old.snapshot_id), str(new.snapshot_id)]) == 0
    text = capsys.readouterr().out
    assert "0 added, 1 removed, 1 changed" in text
    assert "- Beta  https://s.example/b.html" in text and "~ Alpha  https://s.example/a.html" in text
    assert main(["snapshots", "diff", str(old.snapshot_id), str(new.snapshot_id), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["removed"][0]["url"] == "https://s.example/b.html" and payload["chunks_removed"] == 2

    assert main(["publish", str(new.snapshot_id), "--reason", "revised alpha"]) == 0
    assert main(["rollback", "--site", "s", "--reason", "revision was wrong"]) == 0
    assert main(["snapshots", "pin", str(new.snapshot_id)]) == 0
    capsys.readouterr()
    assert main(["snapshots", "history", "--site", "s"]) == 0
    history = capsys.readouterr().out.splitlines()
    assert f"s/production: {new.snapshot_id} -> {old.snapshot_id}" in history[0]
    assert "revision was wrong" in history[0] and "revised alpha" in history[1]
    assert main(["snapshots", "list", "--site", "s", "--json"]) == 0
    listed = {r["snapshot_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[new.snapshot_id]["pinned"] and listed[old.snapshot_id]["aliases"] == ["production"]
    assert main(["snapshots", "unpin", str(new.snapshot_id)]) == 0
    assert snapshots.get(conn, new.snapshot_id).pinned is False
    assert main(["snapshots", "diff", str(old.snapshot_id), "999999"]) == 7
    assert "does not exist" in capsys.readouterr().err


def test_every_alias_and_retention_command_answers_in_json(conn, database_url, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    old = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    new = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1)
    capsys.readouterr()

    def answer(*argv) -> dict:
        assert main([*argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    assert answer("publish", str(new.snapshot_id)) == {"alias": "production", "snapshot_id": new.snapshot_id,
                                                       "previous": old.snapshot_id}
    assert answer("rollback", "--site", "s") == {"site": "s", "alias": "production",
                                                 "from_snapshot": new.snapshot_id, "to_snapshot": old.snapshot_id}
    assert answer("snapshots", "pin", str(new.snapshot_id)) == {"snapshot_id": new.snapshot_id, "site": "s",
                                                                "pinned": True}
    assert answer("snapshots", "unpin", str(new.snapshot_id))["pinned"] is False
    assert answer("snapshots", "prune", "--site", "s", "--keep", "1") == {"site": "s", "keep": 1,
                                                                          "dropped": []}


# -- the golden-question gate on the demo pipeline ------------------------------

LOST_PAGE = "/articles/email-deliverability-basics.html"


@pytest.fixture(scope="module")
def demo_runs(database_server, demo_site, tmp_path_factory):
    """A published demo snapshot, then a run whose crawl leaves out the page a golden question needs."""
    from sitekb import engine, store
    from sitekb.settings import Settings
    from sitekb.sites import load_site
    from tests.conftest import _reset_schema

    _reset_schema(database_server)
    config = load_site("demo").with_base_url(demo_site.base_url)
    settings = Settings.from_env(database_url=database_server, home=tmp_path_factory.mktemp("home"))
    good = engine.refresh(settings, config)
    narrowed = config.model_copy(update={"crawl": config.crawl.model_copy(
        update={"exclude_patterns": [LOST_PAGE.replace(".", r"\.")]})})
    with pytest.raises(QualityGateFailed) as failure:
        engine.refresh(settings, narrowed, run_id="demo__cli__narrowed")
    with store.connection(database_server) as c:
        yield {"good": snapshots.for_run(c, good), "bad": snapshots.for_run(c, "demo__cli__narrowed"),
               "error": str(failure.value), "config": config, "url": database_server, "settings": settings}


def test_golden_gate_rejects_a_snapshot_that_loses_a_question(demo_runs):
    lost = "What spam complaint rate do Gmail's bulk sender rules require us to stay under?"
    assert demo_runs["bad"].state == "rejected"
    assert "golden_questions" in demo_runs["error"] and lost in demo_runs["error"]
    reasons = {r["check"]: r for r in demo_runs["bad"].reasons}
    assert lost in reasons["golden_questions"]["message"]
    quality = demo_runs["bad"].quality
    assert quality["golden"]["hits"] == quality["live_golden"]["hits"] - 1
    assert lost in quality["golden"]["missed"]
    # The diff stored with the rejected snapshot names the page that went missing.
    assert any(u.endswith(LOST_PAGE) for u in demo_runs["bad"].diff["removed"])
    from sitekb import store

    with store.connection(demo_runs["url"]) as c:
        assert snapshots.resolve(c, "demo").snapshot_id == demo_runs["good"].snapshot_id


def test_hybrid_answers_the_demo_golden_questions_at_least_as_well_as_vector(demo_runs):
    """The measurement behind the default mode (numbers in the README): hybrid never loses to vector."""
    from sitekb import query, store
    from sitekb.sites import load_site

    config = demo_runs["config"]
    questions = list(config.golden_questions)
    extra = load_site("demo").golden_questions  # same questions as the site file
    assert questions == list(extra)
    hits = {}
    with store.connection(demo_runs["url"]) as c:
        for mode in ("vector", "keyword", "hybrid"):
            hits[mode] = sum(
                any(p.url == config.absolute(g.expected_url)
                    for p in query.search(c, demo_runs["settings"], g.question, site="demo", k=config.golden_k,
                                          mode=mode, snapshot_id=demo_runs["good"].snapshot_id))
                for g in questions)
    assert hits["hybrid"] >= hits["vector"] and hits["hybrid"] >= hits["keyword"], hits


def test_rollback_and_search_name_the_site_when_more_than_one_is_published(conn, database_url, capsys):
    a = make_snapshot(conn, "s", random_pages("s"), publish_as="production")
    b = make_snapshot(conn, "s", random_pages("s", seed=1), seed=1, publish_as="production")
    # One site published: it may be left out.
    assert main(["rollback", "--reason", "only one site"]) == 0
    assert snapshots.resolve(conn, "s").snapshot_id == a.snapshot_id
    make_snapshot(conn, "t", random_pages("t"), publish_as="production")
    capsys.readouterr()
    # Two: a bare rollback moves nothing and says how to choose.
    assert main(["rollback"]) == 2
    assert "2 sites have published snapshots (s, t): say which with --site" in capsys.readouterr().err
    assert snapshots.resolve(conn, "s").snapshot_id == a.snapshot_id
    assert main(["search", "anything"]) == 2
    assert b.snapshot_id in {r["snapshot_id"] for r in snapshots.list_snapshots(conn, "s")}
