"""A refresh extracts, validates and chunks only the pages that changed: unchanged pages keep their documents,
verdicts and chunks.

A copy of the demo site on 127.0.0.1, embedded by the fake OpenAI server: one
refresh, one page edited, a second refresh (one page extracted and chunked, the
rest reused, every document and chunk as extraction and chunking would make
it), then a changed nosnippet selector and chunk size, which change the inputs
of both stages, so every page is extracted and chunked again.
"""

from __future__ import annotations

import shutil

import pytest

from sitekb import engine
from sitekb.demo.server import SITE_DIR, DemoSite
from sitekb.extract import document_of_page
from sitekb.quality.duplicates import signature
from sitekb.settings import Settings
from sitekb.sites import load_site
from tests.fake_openai import FakeOpenAI, embedding_through, use_environment

EDITED = "articles/churn-signals.html"
SENTENCE = "Most customers who cancel showed warning signs months earlier."
COLUMNS = "url, content_hash, title, description, author, published, modified, language, tags, markdown, " \
          "word_count, visible_words, extraction - 'inputs' AS extraction"


@pytest.fixture(scope="module")
def refreshes(database_server, tmp_path_factory):
    from tests.conftest import _reset_schema

    _reset_schema(database_server)
    home = tmp_path_factory.mktemp("home")
    site_dir = tmp_path_factory.mktemp("site") / "site"
    shutil.copytree(SITE_DIR, site_dir)
    with DemoSite(site_dir=site_dir) as web, FakeOpenAI() as server, pytest.MonkeyPatch.context() as env:
        use_environment(env, database_server, home)
        demo = embedding_through(load_site("demo").with_base_url(web.base_url), server)
        settings = Settings.from_env(database_url=database_server, home=home)
        first = engine.refresh(settings, demo, run_id="inc__1")
        page = site_dir / EDITED
        text = page.read_text(encoding="utf-8")
        assert SENTENCE in text
        page.write_text(text.replace(SENTENCE, "Most customers who cancel showed warning signs a quarter earlier."),
                        encoding="utf-8")
        second = engine.refresh(settings, demo, run_id="inc__2")
        selectors = demo.opt_out.model_copy(update={"nosnippet_selectors": [*demo.opt_out.nosnippet_selectors,
                                                                               ".author-bio"]})
        smaller = demo.chunking.model_copy(update={"target_tokens": demo.chunking.target_tokens - 40})
        third = engine.refresh(settings, demo.model_copy(update={"opt_out": selectors, "chunking": smaller}),
                               run_id="inc__3")
        yield {"runs": (first, second, third), "base": web.base_url, "url": database_server}


def _stage(conn, run_id: str, name: str) -> dict:
    return conn.execute("SELECT stages -> %s FROM sitekb.runs WHERE run_id = %s", (name, run_id)).fetchone()[0]


def _extract(conn, run_id: str) -> dict:
    return _stage(conn, run_id, "extract")


def _documents(conn, run_id: str) -> dict[str, tuple]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM sitekb.documents WHERE run_id = %s ORDER BY url", (run_id,))
    return {row[0]: row for row in rows}


@pytest.fixture
def db(refreshes):
    from sitekb import store

    with store.connection(refreshes["url"]) as connection:
        yield connection


def test_a_refresh_extracts_the_changed_page_and_reuses_the_others(db, refreshes):
    conn = db
    first, second, _ = refreshes["runs"]
    before, after = _extract(conn, first), _extract(conn, second)
    assert before["reused"] == 0 and before["extracted"] == before["documents"] > 30
    assert after["documents"] == before["documents"]
    assert after["extracted"] == 1 and after["reused"] == after["documents"] - 1

    old, new = _documents(conn, first), _documents(conn, second)
    edited = refreshes["base"] + "/" + EDITED
    assert "a quarter earlier" in new[edited][9] and "a quarter earlier" not in old[edited][9]
    # Every reused document is the document extraction made: same text, metadata and what was cut.
    assert {url: row for url, row in new.items() if url != edited} == \
        {url: row for url, row in old.items() if url != edited}


def test_a_reused_document_is_what_extraction_makes_from_the_stored_body(db, refreshes):
    conn = db
    _, second, _ = refreshes["runs"]
    url = refreshes["base"] + "/articles/lead-scoring-fundamentals.html"
    body, content_type = conn.execute("SELECT body, content_type FROM sitekb.pages WHERE url = %s", (url,)).fetchone()
    fresh = document_of_page(body, url, content_type)
    stored = _documents(conn, second)[url]
    assert (fresh.content_hash, fresh.title, fresh.markdown, fresh.word_count) == \
        (stored[1], stored[2], stored[9], stored[10])


def test_changed_extraction_inputs_extract_every_page_again(db, refreshes):
    conn = db
    _, second, third = refreshes["runs"]
    again = _extract(conn, third)
    assert again["reused"] == 0 and again["extracted"] == _extract(conn, second)["documents"]
    inputs = conn.execute("SELECT DISTINCT run_id, extraction ->> 'inputs' FROM sitekb.documents "
                          "WHERE run_id IN (%s, %s)", (second, third)).fetchall()
    assert len({value for _, value in inputs}) == 2


def test_a_refresh_chunks_the_changed_page_and_keeps_the_chunks_of_the_others(db, refreshes):
    conn = db
    first, second, _ = refreshes["runs"]
    before, after = _stage(conn, first, "chunk"), _stage(conn, second, "chunk")
    assert before["reused_documents"] == 0 and before["reused_from"] is None
    assert after["reused_from"] == first and after["reused_documents"] == after["documents"] - 1
    assert after["chunk_inputs"] == before["chunk_inputs"]
    # The chunk suite judges the documents cut again; those that kept their chunks passed it before.
    assert before["chunk_suite_judged"] == before["documents"] and after["chunk_suite_judged"] == 1
    # The refresh's snapshot holds the first one's chunks, but for the edited page's.
    edited = refreshes["base"] + "/" + EDITED

    def snapshot_chunks(run_id):
        table = conn.execute("SELECT table_name FROM sitekb.snapshots WHERE run_id = %s", (run_id,)).fetchone()[0]
        return set(conn.execute(f"SELECT chunk_id, url, seq, array_to_string(heading_path, ' > '), content "
                                f"FROM sitekb_snapshots.{table} WHERE url <> %s", (edited,)).fetchall())

    old, new = snapshot_chunks(first), snapshot_chunks(second)
    assert new == old and len(new) > 100
    assert _stage(conn, second, "embed")["embedded"] < 10          # only the edited page's new chunks


def test_changed_chunking_cuts_every_document_again(db, refreshes):
    conn = db
    _, second, third = refreshes["runs"]
    again = _stage(conn, third, "chunk")
    assert again["chunk_inputs"] != _stage(conn, second, "chunk")["chunk_inputs"]
    assert again["reused_documents"] == 0 and again["reused_from"] is None
    assert again["chunk_suite_judged"] == again["documents"]


def _verdicts(conn, run_id: str) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in conn.execute(
        "SELECT url, status, failures, measures - 'validation_inputs' FROM sitekb.documents WHERE run_id = %s",
        (run_id,))}


def test_a_refresh_validates_the_changed_page_and_keeps_the_verdicts_of_the_others(db, refreshes):
    conn = db
    first, second, _ = refreshes["runs"]
    before, after = _stage(conn, first, "validate"), _stage(conn, second, "validate")
    assert before["validated_before"] == 0 and before["judged"] == before["documents"]
    # The edited page, and any page whose near-duplicate flag its edit changed, are judged again.
    assert after["judged"] >= 1 and after["validated_before"] + after["judged"] == after["documents"]
    assert after["validated_before"] >= after["documents"] - 3
    assert after["accepted"] == before["accepted"] and after["quarantined"] == before["quarantined"]
    # Every kept verdict is the one a full validation gives: the same status, failures and measures.
    old, new = _verdicts(conn, first), _verdicts(conn, second)
    edited = refreshes["base"] + "/" + EDITED
    assert {u: v for u, v in new.items() if u != edited} == {u: v for u, v in old.items() if u != edited}
    assert {v[0] for v in new.values()} >= {"accepted", "quarantined"}   # the demo has quarantined pages
    # The near-duplicate check hashed only the texts it had no signature of; each stored one is the text's.
    assert before["dedup_hashed"] == before["documents"]
    assert 1 <= after["dedup_hashed"] <= after["judged"]
    stored = conn.execute("SELECT markdown, dedup_signature FROM sitekb.documents WHERE run_id = %s",
                          (second,)).fetchall()
    assert stored and all(bytes(sig) == signature(markdown) for markdown, sig in stored)


def test_changed_quality_inputs_validate_every_page_again(db, refreshes):
    _, second, third = refreshes["runs"]
    assert _stage(db, third, "validate")["validated_before"] == 0       # new nosnippet selectors


def test_a_refresh_builds_a_delta_segment_on_the_last_snapshot(db, refreshes):
    from sitekb.store import segments

    first, second, _ = refreshes["runs"]
    ids = dict(db.execute("SELECT run_id, snapshot_id FROM sitekb.snapshots WHERE run_id IN (%s, %s)",
                          (first, second)).fetchall())
    one, two = segments.manifest(db, ids[first]), segments.manifest(db, ids[second])
    assert [s.kind for s in two] == ["base", "delta"] and two[0].segment_id == one[0].segment_id
    assert two[1].rows == two[0].tombstones < 10                        # the edited page's chunks
