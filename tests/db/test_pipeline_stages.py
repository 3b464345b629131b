"""Every stage can run twice: a retried task leaves the same rows, pays nothing twice,
and a failure leaves the published snapshot alone."""

from __future__ import annotations

import pytest

from sitekb import pipeline, snapshots
from sitekb.errors import QualityGateFailed
from sitekb.settings import Settings

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


def test_each_stage_twice_gives_the_same_result(conn, database_url, small_site):
    settings = Settings.from_env()
    run = pipeline.start_run(conn, small_site, "twice", {})
    pipeline.start_run(conn, small_site, "twice", {})  # a retried start is harmless
    for _ in range(2):
        crawl = pipeline.crawl_stage(conn, run, database_url)
    assert crawl["pages"] == 3
    for _ in range(2):
        pipeline.extract_stage(conn, run)
        pipeline.validate_stage(conn, run)
        chunk = pipeline.chunk_stage(conn, run, settings)
    assert _count(conn, "documents", "twice") == 3
    assert _count(conn, "chunks", "twice") == chunk["chunks"] > 3
    first = pipeline.embed_stage(conn, run, settings, log=lambda m: None)
    again = pipeline.embed_stage(conn, run, settings, log=lambda m: None)
    assert first["embedded"] == chunk["chunks"] and again["embedded"] == 0 and again["requests"] == 0
    built = [pipeline.build_stage(conn, run, settings) for _ in range(2)]
    assert built[0]["snapshot_id"] == built[1]["snapshot_id"]
    assert built[1]["chunks"] == chunk["chunks"]
    pipeline.evaluate_stage(conn, run)
    published = [pipeline.publish_stage(conn, run) for _ in range(2)]
    assert published[1]["snapshot_id"] == published[0]["snapshot_id"]
    assert published[1]["previous"] == published[0]["snapshot_id"]  # second publish is a no-op move
    assert conn.execute("SELECT count(*) FROM sitekb.alias_events").fetchone()[0] == 1
    snap = snapshots.resolve(conn, small_site.name)
    assert snap.state == "published" and snap.counts["chunks"] == chunk["chunks"]


def test_a_gutted_crawl_is_rejected_and_the_live_snapshot_stays(conn, database_url, small_site):
    settings = Settings.from_env()
    live_run = pipeline.run_refresh(small_site, settings=settings, run_id="good", log=lambda m: None)
    live = snapshots.resolve(conn, small_site.name)
    data = small_site.model_dump(mode="json")
    data["start_urls"] = data["start_urls"][1:2]  # the site "lost" two of its three pages
    gutted = type(small_site).model_validate(data)
    with pytest.raises(QualityGateFailed) as err:
        pipeline.run_refresh(gutted, settings=settings, run_id="bad", log=lambda m: None)
    message = str(err.value)
    assert "documents_drop" in message and "67%" in message and "live snapshot is unchanged" in message
    assert "golden_questions" in message
    assert snapshots.resolve(conn, small_site.name).snapshot_id == live.snapshot_id
    rejected = snapshots.for_run(conn, "bad")
    assert rejected.state == "rejected"
    assert {r["check"] for r in rejected.reasons} >= {"documents_drop", "golden_questions"}
    status = conn.execute("SELECT status FROM sitekb.runs WHERE run_id = 'bad'").fetchone()[0]
    assert status == "blocked" and live_run == "good"


def test_publish_keeps_the_documents_of_the_newest_runs_and_kept_snapshots_only(conn, database_url, small_site):
    settings = Settings.from_env()
    data = small_site.model_dump(mode="json")
    data["keep_snapshots"] = 2
    site = type(small_site).model_validate(data)

    def documents():
        return {r[0]: r[1] for r in conn.execute(
            "SELECT run_id, count(*) FROM sitekb.documents WHERE site = %s GROUP BY run_id", (site.name,))}

    pipeline.run_refresh(site, settings=settings, run_id="r1", log=lambda m: None)
    snapshots.set_pinned(conn, snapshots.for_run(conn, "r1").snapshot_id, True)   # kept by retention
    for run_id in ("r2", "r3"):
        pipeline.run_refresh(site, settings=settings, run_id=run_id, log=lambda m: None)
    assert documents() == {"r1": 3, "r2": 3, "r3": 3}           # r1 is past the newest two, but pinned
    # A failed run counts as a run, but cannot push out the documents of a kept snapshot.
    with conn.transaction():
        conn.execute("INSERT INTO sitekb.runs (run_id, site, status, finished_at) "
                     "VALUES ('failed', %s, 'failed', now())", (site.name,))
    pipeline.run_refresh(site, settings=settings, run_id="r4", log=lambda m: None)
    # Newest runs besides r4: failed, r3, r2, r1. The failed run fills the window's one other
    # place; r3's snapshot (among the newest two) and r1's (pinned) are kept, so their documents
    # stay; r2's snapshot was retired by this publish, and its documents go.
    assert documents() == {"r1": 3, "r3": 3, "r4": 3}
    assert {r[0] for r in conn.execute("SELECT run_id FROM sitekb.runs")} >= {"r1", "r2", "r3", "r4"}   # history
    stats = conn.execute("SELECT stages->'publish' FROM sitekb.runs WHERE run_id = 'r4'").fetchone()[0]
    assert stats["old_documents_dropped"] == 3
