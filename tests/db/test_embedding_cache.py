"""The embedding cache and the embed stage against a real Postgres and the fake OpenAI server.

Chunks are staged from the demo articles with the real chunker; embedding
goes through the real `openai` client to tests/fake_openai.py on 127.0.0.1,
which counts every request, input and token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sitekb import engine, query, stages
from sitekb.chunking import ChunkingConfig, chunk_document
from sitekb.embedding import _query_embedder, embed_run, estimate_cost, get_embedder, text_hash
from sitekb.errors import BudgetExceeded, TransientError
from sitekb.settings import Settings
from sitekb.sites import site_from_dict
from sitekb.store import snapshots
from sitekb.store.embeddings import run_spend
from sitekb.tokenization import get_tokenizer
from tests.fake_openai import FakeOpenAI, fake_openai, fake_openai_server, fake_vector  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
ARTICLES = sorted((REPO / "plugins/sitekb/demo/content/articles").glob("*.txt"))
MODEL = "text-embedding-3-small"
DIMS = 16


def _article(path: Path) -> tuple[str, str]:
    head, _, body = path.read_text(encoding="utf-8").partition("---\n")
    return head.splitlines()[0].removeprefix("title: "), body


def stage_chunks(conn, run_id: str, docs: dict[str, tuple[str, str]], *, target: int = 200) -> int:
    """Record a run and its chunks (cl100k, as the openai provider would); return the distinct texts."""
    site = site_from_dict({"name": "emb", "start_urls": ["https://emb.test/"]})
    # A run staged before this one has finished (one run of a site at a time); its rows stay.
    conn.execute("UPDATE sitekb.runs SET status = 'succeeded' WHERE site = 'emb' AND status = 'running'")
    engine.start(conn, Settings(), site, run_id, {})
    tokenizer = get_tokenizer("openai", MODEL)
    config = ChunkingConfig(target_tokens=target, max_tokens=8191)
    with conn.transaction(), conn.cursor() as cur:
        for url, (title, markdown) in docs.items():
            for chunk in chunk_document(markdown, url=url, title=title, tokenizer=tokenizer, config=config):
                cur.execute(
                    """INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                                                  text_hash, token_count)
                       VALUES (%s, %s, 'emb', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    (run_id, chunk.chunk_id, url, chunk.seq, list(chunk.heading_path), chunk.text,
                     chunk.embed_text, text_hash(chunk.embed_text), chunk.token_count),
                )
    return conn.execute("SELECT count(DISTINCT text_hash) FROM sitekb.chunks WHERE run_id = %s",
                        (run_id,)).fetchone()[0]


def demo_docs(count: int = 12) -> dict[str, tuple[str, str]]:
    return {f"https://emb.test/{path.stem}": _article(path) for path in ARTICLES[:count]}


def openai_embedder(server: FakeOpenAI, **options):
    return get_embedder("openai", MODEL, DIMS, api_key="test", base_url=server.base_url, **options)


def cached(conn, model: str = MODEL, dims: int = DIMS) -> int:
    return conn.execute("SELECT count(*) FROM sitekb.embedding_cache WHERE model = %s AND dimensions = %s",
                        (model, dims)).fetchone()[0]


def test_cached_vectors_are_the_servers_and_an_unchanged_rerun_sends_no_request(conn, fake_openai):
    total = stage_chunks(conn, "r1", demo_docs())
    first = embed_run(conn, "r1", openai_embedder(fake_openai), batch_size=25)
    assert (first.total, first.embedded, first.reused) == (total, total, 0)
    assert first.requests == fake_openai.stats.ok_requests == -(-total // 25)
    assert all(r.inputs <= 25 for r in fake_openai.stats.log)
    assert cached(conn) == total
    text, vector = conn.execute(
        """SELECT c.embed_text, e.embedding FROM sitekb.chunks c JOIN sitekb.embedding_cache e
           ON e.text_hash = c.text_hash AND e.model = %s AND e.dimensions = %s LIMIT 1""", (MODEL, DIMS),
    ).fetchone()
    np.testing.assert_allclose(vector.to_numpy(), fake_vector(text, DIMS, MODEL), rtol=1e-6)

    fake_openai.reset()
    again = embed_run(conn, "r1", openai_embedder(fake_openai))             # the same run, retried
    stage_chunks(conn, "r2", demo_docs())
    next_run = embed_run(conn, "r2", openai_embedder(fake_openai))          # the next refresh, nothing changed
    assert (again.embedded, next_run.embedded, next_run.reused) == (0, 0, total)
    assert fake_openai.stats.requests == 0
    assert estimate_cost(conn, "r2", openai_embedder(fake_openai))["tokens_to_embed"] == 0


def test_an_edited_page_sends_only_its_new_chunks(conn, fake_openai):
    docs = demo_docs()
    stage_chunks(conn, "before", docs)
    embed_run(conn, "before", openai_embedder(fake_openai))
    url = next(iter(docs))
    title, markdown = docs[url]
    paragraph = next(p for p in markdown.split("\n\n") if len(p) > 200 and not p.startswith(("#", "-")))
    docs[url] = (title, markdown.replace(paragraph, paragraph + " This sentence is new.", 1))
    stage_chunks(conn, "after", docs)
    new_texts = {row[0] for row in conn.execute(
        """SELECT embed_text FROM sitekb.chunks a WHERE run_id = 'after' AND NOT EXISTS (
               SELECT 1 FROM sitekb.chunks b WHERE b.run_id = 'before' AND b.text_hash = a.text_hash)""")}
    assert len(new_texts) == 1 and "This sentence is new." in next(iter(new_texts))
    fake_openai.reset()
    result = embed_run(conn, "after", openai_embedder(fake_openai))
    assert result.embedded == 1 and fake_openai.stats.requests == 1
    assert set(fake_openai.stats.texts) == new_texts


def test_requests_in_flight_are_stored_when_one_fails(conn, fake_openai):
    total = stage_chunks(conn, "flaky", demo_docs())
    fake_openai.queue("ok", 2)
    fake_openai.queue("500", 3)  # the third request fails after its 2 retries
    with pytest.raises(TransientError, match="answered 500"):
        embed_run(conn, "flaky", openai_embedder(fake_openai, max_retries=2, concurrency=1), batch_size=20)
    assert cached(conn) == 40  # the two answered batches were committed
    assert run_spend(conn, "flaky")["requests"] == 2
    fake_openai.reset()
    embed_run(conn, "flaky", openai_embedder(fake_openai, concurrency=3), batch_size=20)
    assert fake_openai.stats.inputs == total - 40
    assert cached(conn) == total


def test_budget_stops_the_stage_before_any_request(conn, database_url, fake_openai, monkeypatch, caplog):
    stage_chunks(conn, "pricey", demo_docs())
    site = site_from_dict({"name": "emb", "start_urls": ["https://emb.test/"], "embedding": {
        "provider": "openai", "model": MODEL, "dimensions": DIMS, "base_url": fake_openai.base_url,
        "budget_usd": 0.0001, "prices_usd_per_million": {MODEL: 100.0}}})
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = Settings(openai_api_key="test", openai_base_url=None)
    engine.start(conn, settings, site, "pricey", {})
    caplog.set_level("INFO", logger="sitekb")
    with pytest.raises(BudgetExceeded, match=r"above the run's budget of \$0.0001"):
        engine.execute(stages.get("embed"), engine.context(conn, settings, database_url, "pricey"))
    assert fake_openai.stats.requests == 0 and cached(conn) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "sitekb.stages.embed"]
    assert "tokens, estimated cost $" in lines[0] and "budget $0.0001" in lines[0]


def test_budget_counts_every_attempt_of_a_run(conn, fake_openai):
    total = stage_chunks(conn, "capped", demo_docs())
    embedder = openai_embedder(fake_openai, price_per_million=1000.0, concurrency=2)
    estimate = estimate_cost(conn, "capped", embedder)
    budget = estimate["estimated_usd"] / 2
    with pytest.raises(BudgetExceeded, match="still missing"):
        embed_run(conn, "capped", embedder, batch_size=10, budget_usd=budget)
    spent = run_spend(conn, "capped")
    assert 0 < spent["usd"] <= budget
    assert spent["inputs"] == cached(conn) == fake_openai.stats.inputs < total
    assert spent["tokens"] == fake_openai.stats.tokens  # the server's own count, as billed
    # A retry with the same budget cannot spend more; with enough budget it pays only the rest.
    fake_openai.reset()
    with pytest.raises(BudgetExceeded):
        embed_run(conn, "capped", embedder, batch_size=10, budget_usd=budget)
    assert fake_openai.stats.requests == 0
    embed_run(conn, "capped", embedder, batch_size=10, budget_usd=estimate["estimated_usd"] + 1e-6)
    assert fake_openai.stats.inputs == total - spent["inputs"]
    assert run_spend(conn, "capped")["usd"] == pytest.approx(estimate["estimated_usd"], abs=1e-5)


KILLABLE = """
import sys
from sitekb import store
from sitekb.embedding import embed_run, get_embedder
url, base_url = sys.argv[1], sys.argv[2]
with store.connection(url) as conn:
    embedder = get_embedder("openai", "text-embedding-3-small", 16, api_key="test", base_url=base_url, concurrency=1)
    embed_run(conn, "killed", embedder, batch_size=10)
"""


def test_a_killed_task_resumes_where_it_stopped(conn, database_url, fake_openai):
    total = stage_chunks(conn, "killed", demo_docs())
    fake_openai.queue("ok", 3)
    fake_openai.queue("stall")  # the fourth request hangs until we kill the task
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, database_url, fake_openai.base_url],
                            cwd=REPO, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while fake_openai.stats.requests < 4 or cached(conn) < 30:
            assert proc.poll() is None, "the embedding task ended before it was killed"
            assert time.monotonic() < deadline, "the embedding task never reached its fourth request"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert total > 40 and cached(conn) == 30 and fake_openai.stats.inputs == 30
    first_texts = set(fake_openai.stats.texts)
    fake_openai.reset()
    result = embed_run(conn, "killed", openai_embedder(fake_openai), batch_size=10)
    assert result.reused == 30 and result.embedded == total - 30
    assert fake_openai.stats.inputs == total - 30
    assert not first_texts & set(fake_openai.stats.texts)  # nothing paid twice
    assert cached(conn) == total


def test_embed_run_on_the_local_model_fills_the_same_cache(conn):
    docs = {url: doc for url, doc in list(demo_docs(2).items())}
    site = site_from_dict({"name": "emb", "start_urls": ["https://emb.test/"]})
    engine.start(conn, Settings(), site, "local", {})
    tokenizer = get_tokenizer("local", "all-MiniLM-L6-v2")
    with conn.transaction(), conn.cursor() as cur:
        for url, (title, markdown) in docs.items():
            for c in chunk_document(markdown, url=url, title=title, tokenizer=tokenizer):
                cur.execute(
                    """INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, text, embed_text, text_hash,
                                                  token_count) VALUES ('local', %s, 'emb', %s, %s, %s, %s, %s, %s)""",
                    (c.chunk_id, url, c.seq, c.text, c.embed_text, text_hash(c.embed_text), c.token_count))
    embedder = get_embedder("local", None, batch_size=4)
    embedder.prewarm()  # what the engine does while the crawl runs
    embedder.prewarm()  # harmless twice
    told: list[tuple[int, int]] = []
    result = embed_run(conn, "local", embedder, progress=lambda done, total: told.append((done, total)))
    assert told == [(min(4 * n, result.total), result.total) for n in range(1, result.requests + 1)]
    assert embedder.loaded and embedder.load_seconds() > 0
    assert 0 <= result.model_load_seconds <= embedder.load_seconds() + 1
    assert result.embedded == result.total > 4 and result.requests == -(-result.total // 4)
    assert result.usd == 0 and cached(conn, "all-MiniLM-L6-v2", 384) == result.total
    text, vector = conn.execute(
        """SELECT c.embed_text, e.embedding FROM sitekb.chunks c JOIN sitekb.embedding_cache e
           USING (text_hash) WHERE e.model = 'all-MiniLM-L6-v2' LIMIT 1""").fetchone()
    np.testing.assert_allclose(vector.to_numpy(), embedder.embed([text])[0], atol=1e-5)
    assert embed_run(conn, "local", embedder).embedded == 0


# -- whole pipeline: a model per snapshot, dry run ---------------------------------------

PAGES = ("lead-scoring-fundamentals", "email-deliverability-basics", "utm-governance", "mql-vs-sql")


def small_demo(demo_config, **embedding):
    data = demo_config.model_dump(mode="json")
    data["start_urls"] = [demo_config.absolute(f"/articles/{slug}.html") for slug in PAGES]
    data["crawl"].update(sitemaps=[], include_patterns=[rf"/articles/({'|'.join(PAGES)})\.html$"])
    data["quality"]["data_docs"] = False
    data["golden_questions"] = [{"question": "How many points does a demo request add to a lead score?",
                                 "expected_url": "/articles/lead-scoring-fundamentals.html"}]
    data["embedding"] = embedding or {"provider": "local"}
    return type(demo_config).model_validate(data)


def test_a_model_change_builds_a_new_snapshot_and_old_ones_keep_their_model(
        conn, database_url, demo_config, fake_openai, monkeypatch, tmp_path):
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)  # what `sitekb serve` would be given
    settings = Settings.from_env()
    _query_embedder.cache_clear()
    local_run = engine.refresh(settings, small_demo(demo_config))
    assert fake_openai.stats.requests == 0
    openai_site = small_demo(demo_config, provider="openai", model=MODEL, dimensions=64)
    openai_run = engine.refresh(settings, openai_site, alias="openai-preview")

    a, b = snapshots.for_run(conn, local_run), snapshots.for_run(conn, openai_run)
    assert (a.embedding_provider, a.embedding_model, a.dimensions, a.tokenizer) == (
        "local", "all-MiniLM-L6-v2", 384, "all-MiniLM-L6-v2")
    assert (b.embedding_provider, b.embedding_model, b.dimensions, b.tokenizer) == ("openai", MODEL, 64, "cl100k_base")
    embed_b = conn.execute("SELECT stages->'embed' FROM sitekb.runs WHERE run_id = %s", (openai_run,)).fetchone()[0]
    assert embed_b["reused"] == 0 and embed_b["embedded"] == embed_b["chunks"]
    # Every chunk went to the new model, plus the golden question the evaluate stage asked it.
    assert fake_openai.stats.inputs == embed_b["chunks"] + 1
    assert fake_openai.stats.texts[-1] == openai_site.golden_questions[0].question

    question = "How many points does a demo request add to a lead score?"
    fake_openai.reset()
    hits = query.search(conn, settings, question, site=demo_config.name, k=3, alias="production")
    assert hits.snapshot_id == a.snapshot_id and hits
    assert fake_openai.stats.requests == 0  # the old snapshot's queries stay on its own local model
    hits = query.search(conn, settings, question, site=demo_config.name, k=3, alias="openai-preview")
    assert hits.snapshot_id == b.snapshot_id and hits
    assert fake_openai.stats.texts == [question]
    (request,) = fake_openai.stats.log
    assert (request.model, request.dimensions) == (MODEL, 64)
    # Pinning the old snapshot by id still works after the model change.
    pinned = query.search(conn, settings, question, site=demo_config.name, k=3, snapshot_id=a.snapshot_id)
    assert pinned and pinned.snapshot_id == a.snapshot_id
    assert fake_openai.stats.requests == 1


DRY_RUN = """
import json, sys
from sitekb import cli
code = cli.main(["run", "demo", "--start-url", sys.argv[1], "--dry-run", "--json"])
print(json.dumps({"exit": code, "torch_loaded": "sentence_transformers" in sys.modules}))
"""


@pytest.mark.parametrize("provider", ["local", "openai"])
def test_dry_run_reports_the_bill_and_calls_no_model(database_url, demo_site, fake_openai, tmp_path, provider):
    env = {**os.environ, "SITEKB_HOME": str(tmp_path), "SITEKB_EMBEDDING_PROVIDER": provider,
           "OPENAI_BASE_URL": fake_openai.base_url}
    env.pop("OPENAI_API_KEY", None)  # a dry run needs no key
    result = subprocess.run([sys.executable, "-c", DRY_RUN, demo_site.base_url], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report, status = result.stdout.strip().rsplit("\n", 1)
    report, status = json.loads(report), json.loads(status)
    assert status == {"exit": 0, "torch_loaded": False}
    assert fake_openai.stats.requests == 0
    assert report["pages"] >= 45 and report["chunks"] >= report["documents"] > 30
    assert report["texts_to_embed"] > 0 and report["tokens_to_embed"] > 10_000
    if provider == "openai":
        assert report["estimated_usd"] == pytest.approx(report["tokens_to_embed"] * 0.02 / 1e6, abs=1e-6)
    else:
        assert report["estimated_usd"] == 0


def test_chunk_stage_never_passes_the_model_limit_whatever_the_site_asks(conn, database_url, settings):
    site = site_from_dict({"name": "emb", "start_urls": ["https://emb.test/"], "quality": {"data_docs": False},
                           "chunking": {"target_tokens": 600, "overlap_tokens": 50, "max_tokens": 1000}})
    engine.start(conn, settings, site, "clamped", {})
    (url, (title, markdown)), = demo_docs(1).items()
    markdown = "\n".join(line for line in markdown.splitlines() if not line.startswith("#"))  # one long section
    conn.execute(
        """INSERT INTO sitekb.documents (run_id, site, url, content_hash, title, markdown, word_count)
           VALUES ('clamped', 'emb', %s, 'h', %s, %s, %s)""", (url, title, markdown, len(markdown.split())))
    out = engine.execute(stages.get("chunk"), engine.context(conn, settings, database_url, "clamped")).counts
    assert out["max_tokens"] == 256 and out["tokenizer"] == "all-MiniLM-L6-v2" and out["chunks"] > 1
    longest = conn.execute("SELECT max(token_count) FROM sitekb.chunks WHERE run_id = 'clamped'").fetchone()[0]
    assert 200 < longest <= 256


def test_the_batch_api_fills_the_cache_through_embed_run_at_half_price(conn, fake_openai):
    from sitekb.embedding import embedder_for_site
    from sitekb.sites import EmbeddingSettings

    total = stage_chunks(conn, "batch", demo_docs())
    emb = EmbeddingSettings(provider="openai", model=MODEL, dimensions=DIMS, batch_api=True,
                            batch_poll_seconds=0.01, base_url=fake_openai.base_url)
    embedder = embedder_for_site(emb, Settings(openai_api_key="test"))
    estimate = estimate_cost(conn, "batch", embedder)
    assert estimate["price_per_million_usd"] == pytest.approx(0.01)
    result = embed_run(conn, "batch", embedder)
    assert result.embedded == total == cached(conn) and fake_openai.stats.batch_jobs == 1
    assert fake_openai.stats.requests == 0  # no synchronous request at all
    assert run_spend(conn, "batch")["usd"] == pytest.approx(estimate["estimated_usd"], abs=1e-6)
    # The same cache serves the synchronous provider: nothing to send.
    assert embed_run(conn, "batch", openai_embedder(fake_openai)).embedded == 0


def test_embeddings_command_shows_spend_and_cache(conn, database_url, fake_openai, capsys):
    from sitekb import cli

    total = stage_chunks(conn, "shown", demo_docs(3))
    embed_run(conn, "shown", openai_embedder(fake_openai, price_per_million=0.02))
    assert cli.main(["embeddings", "spend", "--site", "emb", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["run_id"], row["model"], row["inputs"], row["requests"]) == ("shown", MODEL, total, 1)
    assert row["tokens"] == fake_openai.stats.tokens
    assert cli.main(["embeddings", "cache"]) == 0
    out = capsys.readouterr().out
    assert MODEL in out and f"{total} cached vectors" in out


def test_queries_go_to_the_server_and_key_variable_the_snapshot_was_embedded_with(
        conn, database_url, demo_config, fake_openai, monkeypatch, tmp_path):
    """A site config's base_url and api_key_env are recorded on the snapshot; search needs no OPENAI_* vars."""
    from fastapi.testclient import TestClient

    from sitekb.api import create_app

    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("KB_EMBED_KEY", "site-key")
    monkeypatch.setattr(fake_openai, "api_key", "site-key")    # any other key gets 401
    settings = Settings.from_env()
    _query_embedder.cache_clear()
    site = small_demo(demo_config, provider="openai", model=MODEL, dimensions=64,
                      base_url=fake_openai.base_url, api_key_env="KB_EMBED_KEY")
    run_id = engine.refresh(settings, site)
    snap = snapshots.for_run(conn, run_id)
    assert (snap.embedding_base_url, snap.embedding_api_key_env) == (fake_openai.base_url, "KB_EMBED_KEY")

    question = "How many points does a demo request add to a lead score?"
    fake_openai.reset()
    hits = query.search(conn, settings, question, site=site.name, k=3)
    assert hits and fake_openai.stats.texts == [question]
    _query_embedder.cache_clear()
    with TestClient(create_app(settings, database_url=database_url)) as client:
        listed = client.get(f"/v1/snapshots/{snap.snapshot_id}").json()
        assert listed["embedding_base_url"] == fake_openai.base_url
        answer = client.post("/v1/search", json={"query": question, "site": site.name, "k": 3, "per_page": None})
    assert answer.status_code == 200, answer.text
    assert [r["chunk_id"] for r in answer.json()["results"]] == [p.chunk_id for p in hits]
    assert fake_openai.stats.texts == [question, question]


def test_the_int8_local_model_builds_snapshots_of_its_own_that_answer(conn, demo_config, monkeypatch, tmp_path):
    from sitekb.providers.base import LOCAL_INT8_MODEL

    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    settings = Settings.from_env()
    fp32_run = engine.refresh(settings, small_demo(demo_config))
    int8_run = engine.refresh(settings, small_demo(demo_config, provider="local", model=LOCAL_INT8_MODEL),
                              alias="int8-preview")
    a, b = snapshots.for_run(conn, fp32_run), snapshots.for_run(conn, int8_run)
    assert (a.embedding_model, b.embedding_model) == ("all-MiniLM-L6-v2", LOCAL_INT8_MODEL)
    assert (b.dimensions, b.tokenizer) == (384, "all-MiniLM-L6-v2")
    # Its vectors are cached under its own name: nothing of the fp32 model's was reused for it.
    counts = dict(conn.execute("SELECT model, count(*) FROM sitekb.embedding_cache GROUP BY model").fetchall())
    assert counts[LOCAL_INT8_MODEL] == counts["all-MiniLM-L6-v2"] > 0
    # The golden question passed the gate on it, and a question asked of it is embedded by it.
    assert b.quality["golden"]["hits"] == 1
    hits = query.search(conn, settings, "How many points does a demo request add to a lead score?",
                        site=b.site, alias="int8-preview", k=3)
    assert hits.embedding_model == LOCAL_INT8_MODEL
    assert hits[0].url.endswith("/articles/lead-scoring-fundamentals.html")
