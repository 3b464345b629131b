"""The cache of question vectors (issue #14): a question asked again is not embedded again.

Questions go through the HTTP API to snapshots embedded by the fake
OpenAI-compatible server (tests/fake_openai.py), which counts what it is asked
to embed. The cache is keyed by the snapshot's model, dimensions and server and
by the question with its whitespace collapsed, and holds a bounded number of
questions, the least recently asked leaving first.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from sitekb import api, query, store
from sitekb.settings import Settings
from tests.conftest import _reset_schema
from tests.db.factory import TOPICS, make_snapshot, running_server
from tests.fake_openai import FakeOpenAI, fake_vector

MODEL = "text-embedding-3-small"


def _ask(base: str, question: str, site: str = "kb") -> dict:
    request = urllib.request.Request(base + "/v1/search", method="POST",
                                     data=json.dumps({"query": question, "site": site, "k": 2}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code}: {exc.read().decode()}") from None


def _openai_snapshot(conn, site: str, dims: int, base_url: str):
    vectors = {text: fake_vector(text, dims, MODEL) for page in TOPICS for text in page.chunks}
    snap = make_snapshot(conn, site, TOPICS, dims=dims, vectors=vectors, publish_as="production")
    conn.execute("UPDATE sitekb.snapshots SET embedding_provider = 'openai', embedding_model = %s, "
                 "embedding_base_url = %s WHERE snapshot_id = %s", (MODEL, base_url, snap.snapshot_id))
    return snap


@pytest.fixture(scope="module")
def served(database_server):
    """Two sites embedded by the fake server with the same model, at 512 and at 256 dimensions."""
    _reset_schema(database_server)
    with FakeOpenAI() as server:
        with store.connection(database_server) as conn:
            store.migrate(conn)
            _openai_snapshot(conn, "kb", 512, server.base_url)
            _openai_snapshot(conn, "narrow", 256, server.base_url)
        yield server, database_server


@pytest.fixture
def fake(served):
    served[0].reset()
    return served[0]


def _app(served, **options):
    return api.create_app(Settings(openai_api_key="test"), database_url=served[1], **options)


def test_the_same_question_asked_twice_is_embedded_once(served, fake):
    with running_server(_app(served)) as base:
        first = _ask(base, "How many points does a demo request add?")
        again = _ask(base, "  How many points   does a demo\trequest add? ")   # the same, spaced differently
        assert fake.stats.ok_requests == 1 and fake.stats.texts == ["How many points does a demo request add?"]
        assert [r["chunk_id"] for r in again["results"]] == [r["chunk_id"] for r in first["results"]]
        assert first["results"][0]["url"] == "https://kb.example/lead-scoring.html"
        _ask(base, "how many points does a demo request add?")      # case is kept: another question
        assert fake.stats.ok_requests == 2


def test_a_question_asked_of_another_dimension_is_embedded_for_it(served, fake):
    with running_server(_app(served)) as base:
        wide = _ask(base, "When should we rehearse with webinar speakers?", site="kb")
        narrow = _ask(base, "When should we rehearse with webinar speakers?", site="narrow")
        _ask(base, "When should we rehearse with webinar speakers?", site="narrow")
    assert fake.stats.ok_requests == 2
    assert sorted(r.dimensions for r in fake.stats.log) == [256, 512]
    assert wide["results"][0]["url"] == narrow["results"][0]["url"] == "https://kb.example/webinars.html"


def test_one_question_asked_by_many_at_once_is_embedded_once(served, fake):
    fake.queue("slow", delay=1.0)       # the first request is still being embedded when the others arrive
    with running_server(_app(served)) as base, ThreadPoolExecutor(10) as threads:
        answers = list(threads.map(lambda _: _ask(base, "How long should an A/B test run?"), range(10)))
    assert fake.stats.ok_requests == 1
    assert {a["results"][0]["url"] for a in answers} == {"https://kb.example/ab-tests.html"}


def test_the_cache_keeps_the_most_recently_asked_questions_only(served, fake):
    app = _app(served, question_cache_size=2)
    with running_server(app) as base:
        for question in ("lead score points", "email complaint rate", "webinar speakers", "lead score points"):
            _ask(base, question)
        assert fake.stats.ok_requests == 4            # the first question had left the cache: embedded again
        _ask(base, "webinar speakers")
        assert fake.stats.ok_requests == 4            # still cached
    cache = app.state.question_cache
    assert len(cache) == 2 and (cache.hits, cache.misses) == (1, 4)


def test_a_failed_embedding_is_not_cached():
    cache = query.QuestionCache(4)
    calls = []

    def refuse():
        calls.append("refused")
        raise RuntimeError("the server is down")

    with pytest.raises(RuntimeError):
        cache.get_or_embed(("openai", MODEL, 16, None, "q"), refuse)
    assert cache.get_or_embed(("openai", MODEL, 16, None, "q"), lambda: "vector") == "vector"
    assert calls == ["refused"] and len(cache) == 1
    with pytest.raises(ValueError):
        query.QuestionCache(0)
