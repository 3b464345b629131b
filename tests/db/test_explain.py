"""`sitekb explain`, POST /v1/explain and sitekb_api.explain: why each passage of an answer (issue 15)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from psycopg.conninfo import make_conninfo

import sitekb
from sitekb import api, engine
from sitekb.cli import main
from sitekb.settings import Settings
from sitekb.store import snapshots
from tests.db.factory import READER_PASSWORD, TOPICS, make_snapshot, reader_connection, running_server

PAGES = ("lead-scoring-fundamentals", "utm-governance", "mql-vs-sql")
QUESTION = "How many points does a demo request add to a lead score?"


@pytest.fixture
def small_site(demo_config):
    data = demo_config.model_dump(mode="json")
    data["start_urls"] = [demo_config.absolute(f"/articles/{slug}.html") for slug in PAGES]
    data["crawl"].update(sitemaps=[], include_patterns=[rf"/articles/({'|'.join(PAGES)})\.html$"])
    data["golden_questions"] = [{"question": QUESTION, "expected_url": "/articles/lead-scoring-fundamentals.html"}]
    return type(demo_config).model_validate(data)


def test_explain_on_the_demo_site_names_page_fetch_and_snapshot_of_each_passage(conn, settings, small_site, capsys):
    first = engine.refresh(settings, small_site, run_id="explain-1")
    second = engine.refresh(settings, small_site, run_id="explain-2")      # unchanged pages: 304s
    snap = snapshots.for_run(conn, second)
    fetches = dict(conn.execute("SELECT url, fetched_at FROM sitekb.documents WHERE run_id = %s", (first,)).fetchall())
    capsys.readouterr()

    assert main(["explain", QUESTION, "--site", "demo", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["snapshot_id"] == snap.snapshot_id and len(out["results"]) == 3
    top = out["results"][0]
    assert top["url"].endswith("/articles/lead-scoring-fundamentals.html") and top["rank"] == 1
    for p in out["results"]:
        assert p["page"]["fetched_at"] and p["page"]["etag"] and p["page"]["content_hash"]
        assert p["snapshot"]["snapshot_id"] == snap.snapshot_id
        assert p["embedding"]["model"] == snap.embedding_model
        assert p["chunking"]["chunker_version"] == snap.chunker_version
        assert p["extraction"]["extractor_version"] == snap.extractor_version
        assert p["extraction"]["nosnippet_removed"] is not None
        assert p["quality"]["status"] == "accepted" and p["quality"]["gate"]["passed"] is True
        assert p["snapshot"]["publications"][0]["alias"] == "production"
        # Both kept snapshots hold the page at the same text: first seen in the first, not changed since.
        held = [h["snapshot_id"] for h in p["history"]["snapshots"]]
        assert held == [snapshots.for_run(conn, first).snapshot_id, snap.snapshot_id]
        assert p["history"]["first_seen"]["snapshot_id"] == held[0] == p["history"]["last_changed"]["snapshot_id"]
    # The fetch shown is the one that made this snapshot's document, kept with it.
    older = snapshots.for_run(conn, first).snapshot_id
    assert main(["explain", QUESTION, "--snapshot", str(older), "-k", "1", "--json"]) == 0
    pinned = json.loads(capsys.readouterr().out)["results"][0]
    # Compared as times: Postgres's JSON drops a trailing zero of the microseconds (.66807), isoformat keeps it.
    assert datetime.fromisoformat(pinned["page"]["fetched_at"]) == fetches[pinned["url"]]

    # People read a block per passage.
    assert main(["explain", QUESTION, "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert f"from snapshot {snap.snapshot_id} of demo" in text and "fetched    20" in text
    assert "ETag" in text and "published to production" in text and "history    in 2 kept snapshots" in text

    # One chunk by id; a chunk that does not exist is "not found" (exit 7).
    assert main(["explain", "--chunk", top["chunk_id"], "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["results"][0]["chunk_id"] == top["chunk_id"] and one["results"][0]["rank"] is None
    assert main(["explain", "--chunk", "no-such-chunk"]) == 7
    assert "has no chunk no-such-chunk" in capsys.readouterr().err
    assert main(["explain"]) == 2


def test_http_explain_works_as_the_reader_role_and_shows_only_published_snapshots(conn, database_url):
    live = make_snapshot(conn, "kb", TOPICS, embed=True, publish_as="production")
    hidden = make_snapshot(conn, "kb", TOPICS[:2], embed=True, seed=9)          # validated, never published
    reader = reader_connection(conn, database_url)
    chunk = reader.execute("SELECT chunk_id FROM sitekb_api.search('kb', query => 'webinar', mode => 'keyword', "
                           "k => 1)").fetchone()[0]
    (row,) = reader.execute("SELECT * FROM sitekb_api.explain('kb', %s)", ([chunk],)).fetchone()
    assert row["url"] == "https://kb.example/webinars.html" and "body" not in json.dumps(row["page"])
    assert [h["snapshot_id"] for h in row["history"]["snapshots"]] == [live.snapshot_id]   # not the hidden one
    import psycopg

    with pytest.raises(psycopg.errors.NoDataFound):
        reader.execute("SELECT * FROM sitekb_api.explain('kb', %s, snapshot_id => %s)", ([chunk], hidden.snapshot_id))
    reader.close()
    reader_url = make_conninfo(database_url, user="sitekb_reader", password=READER_PASSWORD)
    with running_server(api.create_app(Settings(), database_url=reader_url)) as base:
        client = sitekb.Client(base, site="kb")
        result = client.explain("How many points does a demo request add to a lead score?", k=2)
        assert result.snapshot_id == live.snapshot_id and len(result) == 2
        assert result[0].url == "https://kb.example/lead-scoring.html" and result[0].rank == 1
        assert result[0].snapshot["publications"][0]["by"] == "test"
        assert result[0].embedding["model"] == "all-MiniLM-L6-v2"
        with pytest.raises(sitekb.client.APIError) as refused:
            client.explain("webinar", snapshot=hidden.snapshot_id)
        assert refused.value.status == 404
