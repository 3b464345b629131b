"""The quality gate against a real Postgres: quarantine with reasons, approvals, a blocked batch.

Pages are synthetic HTML written straight into ``sitekb.pages`` (as the crawler
would), then the real extract → validate → chunk → build → evaluate → publish
stages run over them. Vectors for the embedding cache are deterministic
synthetic ones: loading the local model costs ~15 s per process here, and the
end-to-end suite already covers real embedding.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sitekb import engine, stages
from sitekb.errors import NotFound, QualityGateFailed, SitekbError
from sitekb.quality import quarantine
from sitekb.settings import Settings
from sitekb.sites import site_from_dict
from sitekb.store import runs, snapshots

REPO = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:9"
TOPICS = ["lead scoring", "email deliverability", "utm governance", "webinar operations", "form spam",
          "attribution models", "lifecycle stages", "data hygiene", "event tracking", "budget planning",
          "landing page qa", "vendor renewals", "nurture streams", "sales handoff", "consent banners",
          "content briefs", "pricing tests", "churn signals", "partner programs", "survey operations"]
THIN = f"{BASE}/tags/martech.html"


def article(topic: str, seed: int, extra: str = "") -> str:
    rng = random.Random(seed)
    verbs = ["reviews", "documents", "retires", "audits", "approves", "routes", "scores", "tags", "checks"]
    objects = ["the lead form", "each UTM parameter", "the nurture stream", "the renewal list", "webinar signups",
               "the attribution report", "duplicate contacts", "the pricing page", "bounced addresses"]
    paragraphs = [
        " ".join(f"The {topic} owner {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(['weekly', 'before launch', 'each quarter', 'on request'])} "
                 f"and writes the result in the shared {topic} log for the team." for _ in range(5))
        for _ in range(3)
    ]
    body = "".join(f"<h2>Part {i + 1}</h2><p>{p}</p>" for i, p in enumerate(paragraphs))
    return (f"<html lang='en'><head><title>{topic.title()}</title></head><body>"
            f"<nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
            f"<main><article><h1>{topic.title()}</h1>{body}{extra}</article></main>"
            f"<footer>Copyright Northwind Signal</footer></body></html>")


THIN_HTML = ("<html lang='en'><head><title>Tag: martech</title></head><body><main><h1>Tag: martech</h1>"
             "<p>Four articles are tagged martech on this site today.</p></main></body></html>")


def site(name: str = "gate", **quality):
    quality.setdefault("data_docs", False)  # rendering HTML costs ~1 s a suite; two tests check it
    return site_from_dict({"name": name, "start_urls": [f"{BASE}/"], "quality": quality,
                           "chunking": {"target_tokens": 120, "overlap_tokens": 0}})


def crawl(conn, run, pages: dict[str, str], errors: int = 0) -> None:
    """What the crawl stage leaves behind: one row per fetched URL, tagged with the run."""
    with conn.transaction(), conn.cursor() as cur:
        for url, html in pages.items():
            cur.execute(
                """INSERT INTO sitekb.pages (site, url, status, content_type, content_hash, body, fetched_at,
                                             first_run_id, last_run_id)
                   VALUES (%s, %s, 200, 'text/html', %s, %s, now(), %s, %s)
                   ON CONFLICT (site, url) DO UPDATE SET body = EXCLUDED.body, status = 200,
                       content_hash = EXCLUDED.content_hash, last_run_id = EXCLUDED.last_run_id""",
                (run.site.name, url, hashlib.sha256(html.encode()).hexdigest(), html, run.run_id, run.run_id),
            )
        for i in range(errors):
            cur.execute(
                """INSERT INTO sitekb.pages (site, url, status, fetched_at, first_run_id, last_run_id)
                   VALUES (%s, %s, 404, now(), %s, %s)""",
                (run.site.name, f"{BASE}/broken-{run.run_id}-{i}", run.run_id, run.run_id),
            )


def start(conn, config, run_id: str, params: dict | None = None) -> runs.Run:
    return engine.start(conn, Settings.from_env(), config, run_id, params or {})


def stage(conn, name: str, run: runs.Run) -> dict:
    """One stage of ``run`` through the engine, as a task would run it; its record."""
    settings = Settings.from_env()
    ctx = engine.context(conn, settings, settings.database_url, run.run_id)
    return engine.execute(stages.get(name), ctx).record()


def synthetic_embeddings(conn, run) -> None:
    embedder = engine.context(conn, Settings.from_env(), "", run.run_id).embedder
    with conn.transaction(), conn.cursor() as cur:
        hashes = [r[0] for r in cur.execute("SELECT DISTINCT text_hash FROM sitekb.chunks WHERE run_id = %s",
                                            (run.run_id,))]
        for text_hash in hashes:
            vector = np.random.default_rng(int.from_bytes(text_hash[:8], "big")).standard_normal(embedder.dimensions)
            cur.execute(
                """INSERT INTO sitekb.embedding_cache (model, dimensions, text_hash, embedding)
                   VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                (embedder.model, embedder.dimensions, text_hash, (vector / np.linalg.norm(vector)).astype(np.float32)),
            )


def refresh(conn, config, run_id: str, pages: dict[str, str], errors: int = 0) -> runs.Run:
    """Every stage after the crawl, in order, as the engine runs them."""
    run = start(conn, config, run_id, {"alias": "production"})
    crawl(conn, run, pages, errors)
    for name in ("extract", "validate", "chunk"):
        stage(conn, name, run)
    synthetic_embeddings(conn, run)
    for name in ("build", "evaluate", "publish"):
        stage(conn, name, run)
    return run


def pages(count: int = 20) -> dict[str, str]:
    found = {f"{BASE}/articles/{t.replace(' ', '-')}.html": article(t, i) for i, t in enumerate(TOPICS[:count])}
    return {**found, THIN: THIN_HTML}


def statuses(conn, run_id: str) -> dict[str, tuple[str, list]]:
    rows = conn.execute("SELECT url, status, failures FROM sitekb.documents WHERE run_id = %s", (run_id,))
    return {url: (status, failures) for url, status, failures in rows}


@pytest.fixture(autouse=True)
def data_docs_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    return tmp_path


def test_quarantine_keeps_every_failed_check_with_its_value(conn):
    config = site(data_docs=True)
    run = start(conn, config, "q1", {})
    copy = f"{BASE}/syndicated/lead-scoring-copy.html"
    noisy = article("email deliverability", 1, extra="<p>" + "\ufffd" * 200 + "</p>")
    crawl(conn, run, {**pages(3), copy: article("lead scoring", 0), f"{BASE}/broken-encoding.html": noisy})
    stage(conn, "extract", run)
    out = stage(conn, "validate", run)
    found = statuses(conn, "q1")
    assert found[THIN][0] == "quarantined"
    thin = {f["check"]: f for f in found[THIN][1]}
    assert thin["min_words"]["value"] < 80 and thin["min_words"]["threshold"] == 80
    assert found[copy][0] == "quarantined"
    assert found[copy][1][0]["check"] == "duplicate"
    assert found[copy][1][0]["value"] == f"{BASE}/articles/lead-scoring.html"  # the shorter URL is kept
    # Every failed check, not just the first; the healthy copy is kept although its URL is longer.
    broken = {f["check"]: f["value"] for f in found[f"{BASE}/broken-encoding.html"][1]}
    assert broken["duplicate"] == f"{BASE}/articles/email-deliverability.html" and broken["encoding"] > 0.01
    assert out["quarantined"] == 3 and out["accepted"] == 3
    assert out["failed_checks"]["min_words"] == 1 and out["engine"].startswith("great_expectations")
    measures = conn.execute("SELECT measures FROM sitekb.documents WHERE run_id = 'q1' AND url = %s",
                            (THIN,)).fetchone()[0]
    assert measures["word_count"] < 80 and measures["language"] == "en"
    assert Path(out["data_docs"]).is_file()
    listed = quarantine.list_quarantined(conn, "gate")
    assert {r["url"] for r in listed} == {THIN, copy, f"{BASE}/broken-encoding.html"}


def test_running_the_chunk_stage_again_takes_back_what_it_quarantined(conn, monkeypatch):
    from sitekb.quality import suites

    run = start(conn, site(), "rechunk", {})
    crawl(conn, run, pages(3))
    stage(conn, "extract", run)
    stage(conn, "validate", run)
    articles = [url for url in pages(3) if url != THIN]
    # A limit of 30 tokens (as if the model took no more): every article has a longer chunk.
    real_checks = suites.chunk_checks
    monkeypatch.setattr(suites, "chunk_checks", lambda max_tokens: real_checks(30))
    first = stage(conn, "chunk", run)
    assert sorted(first["quarantined_after_chunking"]) == sorted(articles)
    assert {statuses(conn, "rechunk")[url][0] for url in articles} == {"quarantined"}
    monkeypatch.setattr(suites, "chunk_checks", real_checks)
    again = stage(conn, "chunk", run)
    assert again["taken_back"] == 3 and again["quarantined_after_chunking"] == {}
    found = statuses(conn, "rechunk")
    assert all(found[url] == ("accepted", []) for url in articles)
    assert found[THIN][0] == "quarantined" and [f["check"] for f in found[THIN][1]] == ["min_words"]
    assert conn.execute("SELECT count(DISTINCT url) FROM sitekb.chunks WHERE run_id = 'rechunk'").fetchone()[0] == 3


def test_a_crawl_that_loses_most_pages_is_blocked_and_the_live_snapshot_stays(conn, data_docs_home):
    config = site(data_docs=True)
    refresh(conn, config, "full", pages(20))
    live = snapshots.resolve(conn, "gate")
    assert live.state == "published" and live.counts["documents"] == 20
    assert live.quality["batch"]["success"] and live.quality["documents"]["quarantined"] == 1

    kept = dict(list(pages(20).items())[:3])  # the site "lost" 17 of its 20 articles
    with pytest.raises(QualityGateFailed) as err:
        refresh(conn, config, "gutted", kept)
    message = str(err.value)
    assert "pages_drop: pages fell from 21 to 3 (86% drop, limit 50%)" in message
    assert "documents_drop: documents fell from 20 to 3 (85% drop, limit 50%)" in message
    assert "chunks_drop: chunks fell from" in message and "The live snapshot is unchanged" in message

    assert snapshots.resolve(conn, "gate").snapshot_id == live.snapshot_id
    rejected = snapshots.for_run(conn, "gutted")
    assert rejected.state == "rejected"
    assert {r["check"] for r in rejected.reasons} == {"pages_drop", "documents_drop", "chunks_drop"}
    drop = next(r for r in rejected.reasons if r["check"] == "pages_drop")
    assert drop["value"] == pytest.approx(0.8571, abs=1e-4) and drop["threshold"] == 0.5
    assert rejected.quality["batch"]["measures"]["live_pages"] == 21
    assert conn.execute("SELECT status FROM sitekb.runs WHERE run_id = 'gutted'").fetchone()[0] == "blocked"
    index = Path(rejected.quality["data_docs"]).read_text()
    # The 3 pages left were validated and chunked by the first run as they are: the document and chunk
    # suites judged none of them (their verdicts stand, in the first run's Data Docs); the batch suite ran.
    assert "sitekb.batch" in index and "sitekb.chunks" not in index and "sitekb.documents" not in index
    validated = conn.execute("SELECT stages -> 'validate' FROM sitekb.runs WHERE run_id = 'gutted'").fetchone()[0]
    assert (validated["validated_before"], validated["judged"]) == (3, 0)
    chunked = conn.execute("SELECT stages -> 'chunk' FROM sitekb.runs WHERE run_id = 'gutted'").fetchone()[0]
    assert (chunked["reused_documents"], chunked["chunk_suite_judged"]) == (3, 0)
    assert str(data_docs_home / "data_docs" / "gate" / "gutted") in rejected.quality["data_docs"]


def test_error_rate_ceiling_blocks_the_first_snapshot_too(conn):
    with pytest.raises(QualityGateFailed, match=r"error_rate: 29% of fetched URLs failed \(limit 20%\)"):
        refresh(conn, site(), "errors", pages(4), errors=2)
    with pytest.raises(NotFound):
        snapshots.resolve(conn, "gate")


def test_an_approval_lets_a_quarantined_page_through_until_it_changes(conn, database_url):
    config = site()
    refresh(conn, config, "r1", pages(5))
    assert statuses(conn, "r1")[THIN][0] == "quarantined"
    with pytest.raises(SitekbError, match="nothing to approve"):
        quarantine.approve(conn, f"{BASE}/articles/lead-scoring.html", "fine")

    # Through the CLI, as a content owner would.
    env = {**os.environ, "SITEKB_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-m", "sitekb.cli", "quarantine", "approve", THIN, "--reason",
                             "the tag page is the only index of martech articles", "--by", "content-ops"],
                            env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "approved" in result.stdout and "unchanged" in result.stdout

    run2 = refresh(conn, config, "r2", pages(5))
    status, failures = statuses(conn, "r2")[THIN]
    assert status == "accepted" and {f["check"] for f in failures} == {"min_words"}  # kept for the record
    validate = conn.execute("SELECT stages->'validate' FROM sitekb.runs WHERE run_id = 'r2'").fetchone()[0]
    assert validate["approved"] == 1 and validate["quarantined"] == 0
    snap = snapshots.resolve(conn, "gate")
    assert snap.run_id == run2.run_id
    urls = {r[0] for r in conn.execute(f"SELECT DISTINCT url FROM sitekb_snapshots.{snap.table_name}")}
    assert THIN in urls
    listed = json.loads(subprocess.run([sys.executable, "-m", "sitekb.cli", "quarantine", "--site", "gate", "--json"],
                                       env=env, capture_output=True, text=True, cwd=REPO, timeout=120).stdout)
    [ledger] = listed   # the live snapshot's ledger: the approved page is listed as let through, with who
    assert [(e["url"], e["kind"], e["approval"]["by"]) for e in ledger["entries"]] == [(THIN, "approved", "content-ops")]

    # The page changes: the approval no longer applies.
    changed = {**pages(5), THIN: THIN_HTML.replace("Four articles", "Five articles")}
    refresh(conn, config, "r3", changed)
    assert statuses(conn, "r3")[THIN][0] == "quarantined"


def test_approving_an_unknown_url_or_without_reason_is_a_clear_error(conn):
    refresh(conn, site(), "r1", pages(3))
    with pytest.raises(NotFound, match="sitekb quarantine"):
        quarantine.approve(conn, f"{BASE}/nope.html", "because")
    with pytest.raises(SitekbError, match="needs a reason"):
        quarantine.approve(conn, THIN, "  ")


# -- golden questions: URLs as people write them, pages that must exist, a floor --------------
#
# Asked in keyword mode with k = 100: every chunk sharing a word with the question comes back, so a
# question finds its page exactly when its expected URL names a page of the snapshot, and no model
# has to load. (Vector search of these synthetic vectors would be a lottery.)

HELP = "http://docs.example.test"
ASK = "What does the owner write in the shared log about {}?"


def help_pages() -> dict[str, str]:
    return {f"{HELP}/help/reset-password.html": article("password resets", 101),
            f"{HELP}/help/billing/index.html": article("billing disputes", 102),
            f"{HELP}/guides/setup/": article("workspace setup", 103),
            f"{HELP}/search?q=sso": article("single sign-on", 104),
            f"{HELP}/tags/martech.html": THIN_HTML}


def golden_site(questions: dict[str, str], name: str = "golden", **settings):
    return site_from_dict({"name": name, "start_urls": [f"{HELP}/"], "quality": {"data_docs": False},
                           "chunking": {"target_tokens": 120, "overlap_tokens": 0},
                           "golden_mode": "keyword", "golden_k": 100,
                           "golden_questions": [{"question": q, "expected_url": u} for q, u in questions.items()],
                           **settings})


def test_golden_urls_match_the_way_people_write_them(conn):
    written = {
        ASK.format("password resets"): "/help/reset-password",                     # the README's example
        ASK.format("resetting a password"): "/help/reset-password/index.html#step-2",
        ASK.format("billing disputes"): "HTTP://Docs.Example.Test:80/help/billing/",
        ASK.format("workspace setup"): "/guides/setup",
        ASK.format("single sign-on"): "/search?q=sso&utm_source=newsletter",
    }
    run = refresh(conn, golden_site(written), "variants", help_pages())
    snap = snapshots.resolve(conn, "golden")
    assert snap.run_id == run.run_id and snap.state == "published"
    golden = snap.quality["golden"]
    assert (golden["hits"], golden["asked"], golden["missed"]) == (5, 5, [])
    assert golden["unmatched"] == []


def test_a_golden_url_that_names_no_page_blocks_and_says_what_exists(conn):
    typo, thin = ASK.format("password resets"), ASK.format("martech tags")
    fine = {ASK.format("billing disputes"): "/help/billing", ASK.format("workspace setup"): "/guides/setup/",
            ASK.format("single sign-on"): "/search"}
    # 3 of 5 questions find their page, as golden_min_share asks: the missing pages alone block.
    config = golden_site({typo: "/help/reset-pasword", thin: "/tags/martech", **fine})
    with pytest.raises(QualityGateFailed) as err:
        refresh(conn, config, "unmatched", help_pages())
    message = str(err.value)
    assert (f"golden_questions: golden question {typo!r} expects /help/reset-pasword, which is no page of "
            f"this snapshot; closest pages: {HELP}/help/reset-password.html, ") in message
    assert "correct expected_url in the site config" in message
    # The page was crawled but held back: say so, and how to let it through.
    assert (f"golden question {thin!r} expects /tags/martech, which is no page of this snapshot; "
            f"{THIN.replace(BASE, HELP)} was quarantined (min_words); approve it") in message
    assert not any(question in message for question in fine)
    with pytest.raises(NotFound):
        snapshots.resolve(conn, "golden")
    rejected = snapshots.for_run(conn, "unmatched")
    assert rejected.state == "rejected"
    assert [(r["check"], r["value"]) for r in rejected.reasons] == [
        ("golden_questions", "/help/reset-pasword"), ("golden_questions", "/tags/martech")]
    unmatched = rejected.quality["golden"]["unmatched"]
    assert [u["question"] for u in unmatched] == [typo, thin]
    assert len(unmatched[0]["closest"]) == 3 and unmatched[1]["quarantined"] == {
        THIN.replace(BASE, HELP): ["min_words"]}
    assert rejected.quality["golden"]["hits"] == 3    # the questions whose page exists were asked and found it


def test_a_weak_snapshot_is_blocked_by_the_minimum_share_with_or_without_a_live_one(conn):
    # Words no page has (no digits either: headings say "Part 1"): every question misses
    # although every expected page exists.
    questions = {f"Zebra quokka {animal}?": url for animal, url in
                 zip(["narwhal", "okapi", "axolotl", "pangolin"],
                     ["/help/reset-password", "/help/billing", "/guides/setup", "/search?q=sso"])}
    floor = "0/4 golden questions find their page in the top 100, at least 2 must (golden_min_share 0.5)"
    # A first snapshot: no live one to compare with.
    with pytest.raises(QualityGateFailed, match=re.escape(f"golden_questions: {floor}")):
        refresh(conn, golden_site(questions, name="first"), "first", help_pages())
    with pytest.raises(NotFound):
        snapshots.resolve(conn, "first")
    # A live snapshot that answers nothing (published with the floor off) is no baseline either.
    refresh(conn, golden_site(questions, golden_min_share=0.0), "zero", help_pages())
    live = snapshots.resolve(conn, "golden")
    assert live.run_id == "zero" and live.quality["golden"]["hits"] == 0
    with pytest.raises(QualityGateFailed, match=re.escape(floor)):
        refresh(conn, golden_site(questions), "weak", help_pages())
    assert snapshots.resolve(conn, "golden").snapshot_id == live.snapshot_id
    assert [r["check"] for r in snapshots.for_run(conn, "weak").reasons] == ["golden_questions"]
