"""The stages through the engine: every stage can run twice (a retried task leaves the same rows and
pays nothing twice), a failure leaves the published snapshot alone, a partial rerun takes up a run
where it stopped, and every stage says what it did."""

from __future__ import annotations

import pytest

from sitekb import engine, stages
from sitekb.errors import QualityGateFailed, SitekbError
from sitekb.store import snapshots

PAGES = ("lead-scoring-fundamentals", "utm-governance", "mql-vs-sql")


@pytest.fixture
def small_site(demo_config):
    """Three demo articles, no link following: a few chunks, seconds to embed."""
    data = demo_config.model_dump(mode="json")
    data["start_urls"] = [demo_config.absolute(f"/articles/{slug}.html") for slug in PAGES]
    data["crawl"].update(sitemaps=[], include_patterns=[rf"/articles/({'|'.join(PAGES)})\.html$"])
    data["golden_questions"] = [{"question": "How many points does a demo request add to a lead score?",
                                 "expected_url": "/articles/lead-scoring-fundamentals.html"}]
    return type(demo_config).model_validate(data)


def _count(conn, table: str, run_id: str) -> int:
    return conn.execute(f"SELECT count(*) FROM sitekb.{table} WHERE run_id = %s", (run_id,)).fetchone()[0]


def _twice(conn, settings, database_url, name: str) -> dict:
    """Run a stage of run "twice" two times, as a retried task would; return the second counts."""
    for _ in range(2):
        result = engine.execute(stages.get(name), engine.context(conn, settings, database_url, "twice"))
    return result.counts


def test_each_stage_twice_gives_the_same_result(conn, database_url, settings, small_site):
    engine.start(conn, settings, small_site, "twice", {})
    engine.start(conn, settings, small_site, "twice", {})  # a retried start is harmless
    assert _twice(conn, settings, database_url, "crawl")["pages"] == 3
    for name in ("extract", "validate", "chunk"):
        chunk = _twice(conn, settings, database_url, name)
    assert _count(conn, "documents", "twice") == 3
    assert _count(conn, "chunks", "twice") == chunk["chunks"] > 3
    ctx = engine.context(conn, settings, database_url, "twice")
    first = engine.execute(stages.get("embed"), ctx).counts
    again = engine.execute(stages.get("embed"), ctx).counts
    assert first["embedded"] == chunk["chunks"] and again["embedded"] == 0 and again["requests"] == 0
    built = [engine.execute(stages.get("build"), ctx).counts for _ in range(2)]
    assert built[0]["snapshot_id"] == built[1]["snapshot_id"]
    assert built[1]["chunks"] == chunk["chunks"]
    engine.execute(stages.get("evaluate"), ctx)
    published = [engine.execute(stages.get("publish"), ctx) for _ in range(2)]
    # The run succeeded with the first publish: the second does nothing and says what the first did.
    assert published[1].replayed and published[1].counts == published[0].record()
    assert conn.execute("SELECT count(*) FROM sitekb.alias_events").fetchone()[0] == 1
    snap = snapshots.resolve(conn, small_site.name)
    assert snap.state == "published" and snap.counts["chunks"] == chunk["chunks"]
    finished_at = conn.execute("SELECT finished_at FROM sitekb.runs WHERE run_id = 'twice'").fetchone()[0]
    # Any stage run again on the finished run (Airflow's "clear task") returns its record and touches nothing.
    for name in stages.NAMES:
        recorded = conn.execute("SELECT stages->%s FROM sitekb.runs WHERE run_id = 'twice'", (name,)).fetchone()[0]
        again = engine.execute(stages.get(name), ctx)
        assert again.replayed and again.counts == {k: v for k, v in recorded.items() if k != "seconds"}
    assert snapshots.resolve(conn, small_site.name).state == "published"
    assert _count(conn, "chunks", "twice") == chunk["chunks"]
    assert conn.execute("SELECT status, finished_at FROM sitekb.runs WHERE run_id = 'twice'").fetchone() == \
        ("succeeded", finished_at)


def test_a_gutted_crawl_is_rejected_and_the_live_snapshot_stays(conn, database_url, settings, small_site):
    live_run = engine.refresh(settings, small_site, run_id="good")
    live = snapshots.resolve(conn, small_site.name)
    data = small_site.model_dump(mode="json")
    data["start_urls"] = data["start_urls"][1:2]  # the site "lost" two of its three pages
    gutted = type(small_site).model_validate(data)
    with pytest.raises(QualityGateFailed) as err:
        engine.refresh(settings, gutted, run_id="bad")
    message = str(err.value)
    assert "documents_drop" in message and "67%" in message and "live snapshot is unchanged" in message
    assert "golden_questions" in message
    assert snapshots.resolve(conn, small_site.name).snapshot_id == live.snapshot_id
    rejected = snapshots.for_run(conn, "bad")
    assert rejected.state == "rejected"
    assert {r["check"] for r in rejected.reasons} >= {"documents_drop", "golden_questions"}
    status = conn.execute("SELECT status FROM sitekb.runs WHERE run_id = 'bad'").fetchone()[0]
    assert status == "blocked" and live_run == "good"


def test_publish_keeps_the_documents_of_the_newest_runs_and_kept_snapshots_only(conn, database_url, settings,
                                                                                small_site):
    data = small_site.model_dump(mode="json")
    data["keep_snapshots"] = 2
    site = type(small_site).model_validate(data)

    def documents():
        return {r[0]: r[1] for r in conn.execute(
            "SELECT run_id, count(*) FROM sitekb.documents WHERE site = %s GROUP BY run_id", (site.name,))}

    engine.refresh(settings, site, run_id="r1")
    snapshots.set_pinned(conn, snapshots.for_run(conn, "r1").snapshot_id, True)   # kept by retention
    for run_id in ("r2", "r3"):
        engine.refresh(settings, site, run_id=run_id)
    assert documents() == {"r1": 3, "r2": 3, "r3": 3}           # r1 is past the newest two, but pinned
    # A failed run counts as a run, but cannot push out the documents of a kept snapshot.
    with conn.transaction():
        conn.execute("INSERT INTO sitekb.runs (run_id, site, status, finished_at) "
                     "VALUES ('failed', %s, 'failed', now())", (site.name,))
    engine.refresh(settings, site, run_id="r4")
    # Newest runs besides r4: failed, r3, r2, r1. The failed run fills the window's one other
    # place; r3's snapshot (among the newest two) and r1's (pinned) are kept, so their documents
    # stay; r2's snapshot was retired by this publish, and its documents go.
    assert documents() == {"r1": 3, "r3": 3, "r4": 3}
    assert {r[0] for r in conn.execute("SELECT run_id FROM sitekb.runs")} >= {"r1", "r2", "r3", "r4"}   # history
    stats = conn.execute("SELECT stages->'publish' FROM sitekb.runs WHERE run_id = 'r4'").fetchone()[0]
    assert stats["old_documents_dropped"] == 3


def test_a_blocked_run_is_taken_up_from_evaluate_with_the_config_as_it_is_now(conn, settings, small_site):
    engine.refresh(settings, small_site, run_id="first")
    data = small_site.model_dump(mode="json")
    data["start_urls"] = data["start_urls"][:1]
    data["crawl"]["include_patterns"] = [r"/articles/lead-scoring-fundamentals\.html$"]
    narrowed = type(small_site).model_validate(data)
    with pytest.raises(QualityGateFailed):
        engine.refresh(settings, narrowed, run_id="narrow")
    assert snapshots.for_run(conn, "narrow").state == "rejected"
    # The content owner accepts the smaller site: the thresholds change, nothing is crawled again.
    data["quality"] = {"max_page_drop": 1.0, "max_document_drop": 1.0, "max_chunk_drop": 1.0}
    accepted = type(small_site).model_validate(data)
    crawled = conn.execute("SELECT stages->'crawl'->>'requests' FROM sitekb.runs WHERE run_id = 'narrow'").fetchone()
    assert engine.rerun(settings, accepted, "evaluate") == "narrow"
    row = conn.execute("SELECT status, stages->'crawl'->>'requests', config_hash FROM sitekb.runs "
                       "WHERE run_id = 'narrow'").fetchone()
    assert row == ("succeeded", crawled[0], accepted.config_hash())
    assert snapshots.resolve(conn, small_site.name).run_id == "narrow"
    with pytest.raises(SitekbError, match="already succeeded"):
        engine.rerun(settings, accepted, "publish")


def test_the_build_records_the_embedder_the_run_chose_when_it_started(conn, database_url, settings, small_site):
    run_id = engine.refresh(settings, small_site, run_id="chosen")
    choice = conn.execute("SELECT embedding FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()[0]
    assert (choice["provider"], choice["model"], choice["dimensions"]) == ("local", "all-MiniLM-L6-v2", 384)
    snap = snapshots.for_run(conn, run_id)
    assert (snap.embedding_model, snap.dimensions, snap.tokenizer) == (choice["model"], 384, choice["tokenizer"])
    # A later task of the run builds with what the run recorded, not with what it would choose now.
    with conn.transaction():
        conn.execute("INSERT INTO sitekb.runs (run_id, site, config, embedding) SELECT 'copy', site, config, "
                     "embedding || '{\"tokenizer\": \"as-recorded\"}' FROM sitekb.runs WHERE run_id = %s", (run_id,))
        conn.execute("INSERT INTO sitekb.chunks SELECT 'copy', chunk_id, site, url, seq, heading_path, text, "
                     "embed_text, text_hash, token_count FROM sitekb.chunks WHERE run_id = %s", (run_id,))
        conn.execute("INSERT INTO sitekb.documents (run_id, site, url, content_hash, title, markdown, word_count) "
                     "SELECT 'copy', site, url, content_hash, title, markdown, word_count FROM sitekb.documents "
                     "WHERE run_id = %s AND status = 'accepted'", (run_id,))
    engine.execute(stages.get("build"), engine.context(conn, settings, database_url, "copy"))
    assert snapshots.for_run(conn, "copy").tokenizer == "as-recorded"


def test_every_stage_logs_what_it_did(conn, settings, small_site, caplog):
    caplog.set_level("INFO", logger="sitekb")
    engine.refresh(settings, small_site, run_id="logged")
    done = [r.getMessage() for r in caplog.records if r.name == "sitekb.engine" and "(" in r.getMessage()
            and not r.getMessage().endswith("...")]
    assert [m.split("]")[0].lstrip("[") for m in done if m.startswith("[")] == list(stages.NAMES)
    text = "\n".join(done)
    assert "3 pages" in text and "3 of 3 documents accepted" in text and "texts embedded" in text
    assert "passed the gate; golden 1/1" in text and "production -> snapshot" in text
    stored = conn.execute("SELECT stages FROM sitekb.runs WHERE run_id = 'logged'").fetchone()[0]
    assert set(stored) == set(stages.NAMES)
    assert all(stored[name]["seconds"] >= 0 for name in stages.NAMES)


def test_a_dry_run_reports_the_bill_and_keeps_no_staged_rows(conn, settings, small_site):
    result = engine.dry_run(settings, small_site)
    assert result["pages"] == 3 and result["documents"] == 3 and result["chunks"] > 3
    assert result["texts_to_embed"] == result["chunks"] and result["estimated_usd"] == 0
    run_id, status, stages_done = conn.execute(
        "SELECT run_id, status, stages FROM sitekb.runs WHERE params->>'dry_run' = 'true'").fetchone()
    assert status == "succeeded" and set(stages_done) == set(stages.DRY_RUN)
    assert _count(conn, "documents", run_id) == _count(conn, "chunks", run_id) == 0
    assert conn.execute("SELECT count(*) FROM sitekb.embedding_cache").fetchone()[0] == 0
    assert snapshots.for_run(conn, run_id) is None
    with pytest.raises(SitekbError, match="was a dry run"):
        engine.rerun(settings, small_site, "embed")     # the newest run of the site is the dry run


def test_a_killed_run_is_taken_up_only_with_force_and_keeps_its_embedder_past_chunking(
        conn, database_url, settings, small_site, monkeypatch, tmp_path, capsys):
    import json

    import yaml

    from sitekb.cli import main

    engine.start(conn, settings, small_site, "killed", {"alias": "staging"})
    ctx = engine.context(conn, settings, database_url, "killed")
    for name in ("crawl", "extract", "validate", "chunk"):
        engine.execute(stages.get(name), ctx)
    # The process died here: the run is still marked running.
    with pytest.raises(SitekbError, match="still marked running.*--force"):
        engine.rerun(settings, small_site, "embed")
    recorded = conn.execute("SELECT embedding FROM sitekb.runs WHERE run_id = 'killed'").fetchone()[0]

    def must_not_choose(*args, **kwargs):
        raise AssertionError("a rerun from embed chose its embedder again")

    monkeypatch.setattr(engine, "choose", must_not_choose)
    # Through the CLI, as an operator would; the sample search asks the alias the run published.
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_site.model_dump(mode="json")))
    monkeypatch.setenv("SITEKB_HOME", str(settings.home))
    assert main(["run", str(config), "--from", "embed", "--force", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run_id"] == "killed" and printed["aliases"] == ["staging"] and printed["sample_search"]
    row = conn.execute("SELECT status, embedding FROM sitekb.runs WHERE run_id = 'killed'").fetchone()
    assert row == ("succeeded", recorded)
    snap = snapshots.for_run(conn, "killed")
    assert (snap.state, snap.embedding_model, snap.tokenizer) == ("published", recorded["model"],
                                                                   recorded["tokenizer"])


def test_a_rerun_from_chunking_chooses_its_embedder_again(conn, database_url, settings, small_site, monkeypatch):
    engine.start(conn, settings, small_site, "rechunk", {})
    ctx = engine.context(conn, settings, database_url, "rechunk")
    for name in ("crawl", "extract", "validate"):
        engine.execute(stages.get(name), ctx)
    conn.execute("UPDATE sitekb.runs SET embedding = embedding || '{\"tokenizer\": \"stale\"}' "
                 "WHERE run_id = 'rechunk'")
    assert engine.rerun(settings, small_site, "chunk", force=True) == "rechunk"
    recorded = conn.execute("SELECT embedding->>'tokenizer' FROM sitekb.runs WHERE run_id = 'rechunk'").fetchone()[0]
    assert recorded != "stale" and snapshots.for_run(conn, "rechunk").tokenizer == recorded


def test_a_site_that_requires_approval_is_built_and_judged_but_not_published_by_the_cli(conn, settings, small_site,
                                                                                         caplog):
    data = small_site.model_dump(mode="json")
    data["airflow"] = {"approval": {"required": True}}
    site = type(small_site).model_validate(data)
    with caplog.at_level("INFO", logger="sitekb"):
        run_id = engine.refresh(settings, site)
    snap = snapshots.for_run(conn, run_id)
    assert snap.state == "validated"
    assert conn.execute("SELECT count(*) FROM sitekb.aliases WHERE site = %s", (site.name,)).fetchone()[0] == 0
    assert f"sitekb snapshots publish {snap.snapshot_id}" in caplog.text

    from sitekb.orchestration.runner import run_dag

    with pytest.raises(SitekbError, match="cannot wait for one: trigger the DAG sitekb_demo"):
        run_dag(site, "demo", settings)


def test_golden_urls_written_as_people_write_them_find_their_page_and_a_wrong_one_blocks(conn, settings,
                                                                                        small_site):
    question = small_site.golden_questions[0].question
    data = small_site.model_dump(mode="json")
    data["golden_questions"] = [{"question": question, "expected_url": "/articles/lead-scoring-fundamentals"}]
    written = type(small_site).model_validate(data)
    engine.refresh(settings, written, run_id="written")
    snap = snapshots.resolve(conn, small_site.name)
    assert snap.run_id == "written" and snap.quality["golden"]["hits"] == 1
    # A URL that names no page blocks, with the page it probably means; the live snapshot stays.
    data["golden_questions"] = [{"question": question, "expected_url": "/articles/lead-scoring-fundamental/"}]
    with pytest.raises(QualityGateFailed) as err:
        engine.refresh(settings, type(small_site).model_validate(data), run_id="wrong")
    assert (f"golden question {question!r} expects /articles/lead-scoring-fundamental/, which is no page of this "
            f"snapshot; closest pages: {small_site.absolute('/articles/lead-scoring-fundamentals.html')}"
            ) in str(err.value)
    assert snapshots.resolve(conn, small_site.name).snapshot_id == snap.snapshot_id
