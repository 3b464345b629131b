"""The HTTP API's connection pool: it survives a database restart and a burst of questions.

A restart is tested on a Postgres of this module's own (the embedded server in a
temporary folder, stopped and started again while the API keeps running), so the
session's server is not disturbed. The burst is 20 questions at once against a
pool of 2 connections while the embedding server (tests/fake_openai.py) takes a
second per question: a request that held its connection while the question is
embedded would leave the others waiting past the pool's timeout (503).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sitekb import api, store
from sitekb.settings import Settings
from sitekb.store import embedded
from tests.conftest import _reset_schema
from tests.db.factory import TOPICS, make_snapshot, running_server
from tests.fake_openai import FakeOpenAI, fake_vector


def _call(base: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def own_server():
    """A Postgres of this module's own, with one published snapshot: (home, url)."""
    home = Path(tempfile.mkdtemp(prefix="skp-"))   # short: Unix socket paths are limited to ~100 bytes
    try:
        url = embedded.start(home)
        with store.connection(url) as conn:
            store.migrate(conn)
            make_snapshot(conn, "kb", TOPICS, publish_as="production")
        yield home, url
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)


def test_the_first_request_after_a_database_restart_is_answered(own_server):
    home, url = own_server
    app = api.create_app(Settings(), database_url=url, pool_size=2)
    body = {"query": "lead score", "site": "kb", "mode": "keyword", "k": 2}
    with running_server(app) as base:
        assert _call(base, "/v1/search", body)[0] == 200      # the pool now holds an idle connection
        assert embedded.stop(home)
        assert embedded.start(home) == url
        status, answer = _call(base, "/v1/search", body)
        assert status == 200, answer
        assert answer["results"][0]["url"].startswith("https://kb.example/")
        status, listed = _call(base, "/v1/snapshots")
        assert status == 200 and [s["site"] for s in listed] == ["kb"]
        assert _call(base, "/readyz")[0] == 200


@pytest.fixture(scope="module")
def openai_kb(database_server):
    """A snapshot embedded by the fake OpenAI-compatible server (16 dimensions), published as kb."""
    _reset_schema(database_server)
    with FakeOpenAI() as server:
        pages = TOPICS
        vectors = {text: fake_vector(text, 16, "text-embedding-3-small") for page in pages for text in page.chunks}
        with store.connection(database_server) as conn:
            store.migrate(conn)
            snap = make_snapshot(conn, "kb", pages, dims=16, vectors=vectors, publish_as="production")
            conn.execute("UPDATE sitekb.snapshots SET embedding_provider = 'openai', embedding_model = %s, "
                         "embedding_base_url = %s WHERE snapshot_id = %s",
                         ("text-embedding-3-small", server.base_url, snap.snapshot_id))
        yield server, database_server


def test_twenty_slow_questions_at_once_share_two_connections(openai_kb):
    server, url = openai_kb
    server.reset()
    questions = [f"how do I raise lead score number {n}?" for n in range(20)]
    server.queue("slow", len(questions), delay=1.0)     # each question takes a second to embed
    app = api.create_app(Settings(openai_api_key="test"), database_url=url, pool_size=2)
    app.state.pool.timeout = 2      # a request that waits this long for a connection is a 503
    with running_server(app) as base, ThreadPoolExecutor(len(questions)) as threads:
        answers = list(threads.map(lambda q: _call(base, "/v1/search", {"query": q, "site": "kb", "k": 3}),
                                   questions))
    assert [status for status, _ in answers] == [200] * len(questions), [a for s, a in answers if s != 200][:3]
    assert all(answer["results"] for _, answer in answers)
    assert server.stats.ok_requests == len(questions)
    assert sorted(server.stats.texts) == sorted(questions)
