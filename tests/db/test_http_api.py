"""The HTTP API (`sitekb serve`) and the Python client, served by uvicorn on 127.0.0.1.

One module-scoped database holds a small snapshot embedded with the bundled
model, so questions have known answers and the query is embedded for real.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo

import sitekb
from sitekb import api, store
from sitekb.store import schema, snapshots
from sitekb.client import APIError
from sitekb.embedding import query_embedder
from sitekb.settings import Settings
from tests.conftest import _reset_schema
from tests.db.factory import READER_PASSWORD, TOPICS, make_snapshot, random_pages, running_server

QUESTIONS = {
    "What complaint rate does Gmail allow for bulk senders?": "https://kb.example/email.html",
    "How many points does a demo request add to a lead score?": "https://kb.example/lead-scoring.html",
    "When should we rehearse with webinar speakers?": "https://kb.example/webinars.html",
    "How long should an A/B test run?": "https://kb.example/ab-tests.html",
}


@pytest.fixture(scope="module")
def kb(database_server):
    _reset_schema(database_server)
    with store.connection(database_server) as conn:
        store.migrate(conn)
        live = make_snapshot(conn, "kb", TOPICS, embed=True, publish_as="production")
        hidden = make_snapshot(conn, "kb", TOPICS[:2], embed=True, seed=9)          # validated, never published
        conn.execute(f"ALTER ROLE sitekb_reader PASSWORD '{READER_PASSWORD}'")
    reader_url = make_conninfo(database_server, user="sitekb_reader", password=READER_PASSWORD)
    # The server connects as the read-only role: all it needs is the SQL API.
    with running_server(api.create_app(Settings(), database_url=reader_url)) as base:
        yield {"base": base, "live": live, "hidden": hidden, "admin_url": database_server, "reader_url": reader_url}


def _call(base: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_search_answers_with_citations_and_the_snapshot_version(kb):
    status, body = _call(kb["base"], "/v1/search", {"query": "What complaint rate does Gmail allow for bulk "
                                                             "senders?", "site": "kb", "k": 3})
    assert status == 200, body
    assert (body["site"], body["alias"], body["mode"], body["snapshot_id"]) == \
        ("kb", "production", "hybrid", kb["live"].snapshot_id)          # the default mode
    assert body["embedding_model"] == "all-MiniLM-L6-v2"
    top = body["results"][0]
    assert top["url"] == "https://kb.example/email.html" and top["title"] == "Email deliverability"
    assert top["heading_path"] == ["Email", "Deliverability"] and "0.3 percent" in top["content"]
    assert top["rank"] == 1 and top["snippet"] and len(body["results"]) == 3


def test_http_and_sql_api_return_the_same_passages(kb):
    reader = psycopg.connect(kb["reader_url"], autocommit=True)
    register_vector(reader)
    try:
        for question, expected_url in QUESTIONS.items():
            vector = Vector(query_embedder("local", "all-MiniLM-L6-v2", 384, Settings()).embed([question])[0])
            for mode in ("vector", "keyword", "hybrid"):
                status, body = _call(kb["base"], "/v1/search", {"query": question, "site": "kb", "k": 4,
                                                                "mode": mode})
                assert status == 200, body
                rows = reader.execute(
                    "SELECT chunk_id, rank, url, score, snapshot_id FROM sitekb_api.search('kb', query => %s, "
                    "query_embedding => %s, k => 4, mode => %s, per_page => 2)", (question, vector, mode)).fetchall()
                http = [(r["chunk_id"], r["rank"], r["url"]) for r in body["results"]]
                assert http == [(r[0], r[1], r[2]) for r in rows], (question, mode)
                assert [r["score"] for r in body["results"]] == pytest.approx([r[3] for r in rows], abs=1e-6)
                assert {r[4] for r in rows} == {body["snapshot_id"]}
            assert body["results"][0]["url"] == expected_url   # hybrid, too, finds the page
    finally:
        reader.close()


def test_search_returns_at_most_two_passages_a_page_unless_told(kb):
    question = "How should we score leads, and how long should an A/B test run?"
    status, capped = _call(kb["base"], "/v1/search", {"query": question, "site": "kb", "k": 12})
    assert status == 200, capped
    urls = [r["url"] for r in capped["results"]]
    assert max(urls.count(u) for u in urls) <= 2
    status, one = _call(kb["base"], "/v1/search", {"query": question, "site": "kb", "k": 5, "per_page": 1})
    assert len({r["url"] for r in one["results"]}) == len(one["results"]) == 5
    status, free = _call(kb["base"], "/v1/search", {"query": question, "site": "kb", "k": 12, "per_page": None})
    assert status == 200 and len(free["results"]) == 12
    assert [r["chunk_id"] for r in free["results"]][:1] == [r["chunk_id"] for r in capped["results"]][:1]
    for bad in ({"per_page": 0}, {"vector_weight": 1.5}, {"query_language": "spanish!"}):
        status, body = _call(kb["base"], "/v1/search", {"query": question, "site": "kb", **bad})
        assert status == 422, (bad, body)


def test_pages_cite_each_page_once_with_its_best_passages(kb):
    question = "What complaint rate does Gmail allow for bulk senders?"
    status, body = _call(kb["base"], "/v1/pages", {"query": question, "site": "kb", "k": 3, "passages": 2,
                                                   "mode": "hybrid"})
    assert status == 200, body
    assert (body["site"], body["alias"], body["snapshot_id"]) == ("kb", "production", kb["live"].snapshot_id)
    pages = body["pages"]
    assert [p["rank"] for p in pages] == [1, 2, 3] and len({p["url"] for p in pages}) == 3
    assert pages[0]["url"] == "https://kb.example/email.html" and pages[0]["title"] == "Email deliverability"
    assert all(1 <= len(p["passages"]) <= 2 for p in pages)
    assert pages[0]["score"] == pytest.approx(pages[0]["passages"][0]["score"])
    assert pages[0]["passages"][0]["snippet"] and pages[0]["passages"][0]["heading_path"]
    # The client speaks it too, with the same types.
    result = sitekb.Client(kb["base"], site="kb").pages(question, k=3, passages=2, mode="hybrid")
    assert [p.url for p in result] == [p["url"] for p in pages]
    assert result[0].passages[0].chunk_id == pages[0]["passages"][0]["chunk_id"]
    status, body = _call(kb["base"], "/v1/pages", {"query": question, "site": "kb", "k": 21})
    assert status == 422


def test_filters_over_http(kb):
    status, body = _call(kb["base"], "/v1/search", {
        "query": "spam", "site": "kb", "k": 10, "mode": "keyword",
        "filters": {"url_prefix": "https://kb.example/forms", "tags": ["web"], "language": "en"}})
    assert status == 200, body
    assert [r["url"] for r in body["results"]] == ["https://kb.example/forms.html"] * 2
    status, body = _call(kb["base"], "/v1/search", {
        "query": "webinar speakers", "site": "kb", "k": 10, "mode": "vector",
        "filters": {"published_before": "2023-12-31"}})
    assert status == 200 and {r["url"] for r in body["results"]} == {"https://kb.example/webinars.html"}


def test_snapshots_endpoints_show_only_queryable_snapshots(kb):
    status, listed = _call(kb["base"], "/v1/snapshots?site=kb")
    assert status == 200
    assert [s["snapshot_id"] for s in listed] == [kb["live"].snapshot_id]
    assert listed[0]["aliases"] == ["production"] and listed[0]["dimensions"] == 384
    status, one = _call(kb["base"], f"/v1/snapshots/{kb['live'].snapshot_id}")
    assert status == 200 and one["state"] == "published" and one["chunks"] == 12
    status, problem = _call(kb["base"], f"/v1/snapshots/{kb['hidden'].snapshot_id}")
    assert status == 404 and "not available" in problem["detail"]


@pytest.mark.parametrize("body, status, words", [
    ({"query": "", "site": "kb"}, 422, "query"),
    ({"query": "   ", "site": "kb"}, 422, "blank"),
    ({"query": "x", "site": "kb", "k": 0}, 422, "k"),
    ({"query": "x", "site": "kb", "k": 101}, 422, "k"),
    ({"query": "x", "site": "kb", "mode": "fuzzy"}, 422, "mode"),
    ({"query": "x", "site": "kb", "colour": "red"}, 422, "colour"),
    ({"query": "x", "site": "kb", "alias": "production", "snapshot": 1}, 422, "not both"),
    ({"query": "x", "site": "kb", "filters": {"published_after": "last week"}}, 422, "published_after"),
    ({"query": "x", "site": "kb", "filters": {"published_after": "2024-02-01",
                                              "published_before": "2024-01-01"}}, 422, "later than"),
    ({"query": "x", "site": "Bad Site!"}, 422, "site"),
    ({"query": "x", "site": "nosuchsite"}, 404, "no snapshot published as production"),
    ({"query": "x", "site": "kb", "alias": "staging"}, 404, "no snapshot published as staging"),
    ({"query": "x", "site": "kb", "snapshot": 999999}, 404, "not available"),
    (b"{not json", 422, "json"),
])
def test_bad_input_gets_a_clear_4xx(kb, body, status, words):
    got, problem = _call(kb["base"], "/v1/search", body)
    assert got == status, problem
    assert words.lower() in json.dumps(problem).lower()


def test_a_pinned_unpublished_snapshot_is_refused(kb):
    got, problem = _call(kb["base"], "/v1/search", {"query": "spam", "site": "kb",
                                                    "snapshot": kb["hidden"].snapshot_id})
    assert got == 404 and f"snapshot {kb['hidden'].snapshot_id} is not available" in problem["detail"]


def test_health_readiness_and_openapi(kb):
    assert _call(kb["base"], "/healthz") == (200, {"status": "ok", "version": sitekb.__version__})
    status, ready = _call(kb["base"], "/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["schema_version"] == schema.latest_version()
    status, spec = _call(kb["base"], "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/v1/search", "/v1/snapshots", "/v1/snapshots/{snapshot_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "SearchRequest" in spec["components"]["schemas"]
    with urllib.request.urlopen(kb["base"] + "/", timeout=30) as page:
        html = page.read().decode()
    assert "<form" in html and "/v1/search" in html
    assert "src=" not in html and 'href="http' not in html and "@import" not in html   # no external assets


def test_readiness_and_search_report_a_database_that_is_down():
    app = api.create_app(Settings(), database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    app.state.pool.timeout = 2
    with running_server(app) as base:
        status, body = _call(base, "/readyz")
        assert status == 503 and body["status"] == "unavailable"
        status, body = _call(base, "/v1/search", {"query": "x", "site": "kb"})
        assert status == 503 and "not reachable" in body["detail"]
        assert _call(base, "/healthz")[0] == 200


def test_api_keys_guard_the_v1_endpoints(kb, monkeypatch):
    monkeypatch.setenv("SITEKB_API_KEYS", "alpha, beta")
    settings = Settings.from_env()
    assert settings.api_keys == ("alpha", "beta")
    app = api.create_app(settings, database_url=kb["reader_url"], api_keys=[*settings.api_keys, " gamma ", "", " "])
    assert app.state.api_keys == ["alpha", "beta", "gamma"]          # blanks would let an empty key in
    with running_server(app) as base:
        body = {"query": "lead score", "site": "kb", "mode": "keyword"}
        status, problem = _call(base, "/v1/search", body)
        assert status == 401 and "Authorization: Bearer" in problem["detail"]
        assert _call(base, "/v1/search", body, {"Authorization": "Bearer wrong"})[0] == 401
        assert _call(base, "/v1/search", body, {"Authorization": "Bearer beta"})[0] == 200
        assert _call(base, "/v1/search", body, {"X-API-Key": "gamma"})[0] == 200
        assert _call(base, "/v1/search", body, {"X-API-Key": ""})[0] == 401
        assert _call(base, "/v1/snapshots")[0] == 401
        assert _call(base, "/healthz")[0] == 200   # probes stay open
        with pytest.raises(APIError) as denied:
            sitekb.Client(base).search("lead score")
        assert denied.value.status == 401
        assert len(sitekb.Client(base, api_key="alpha").search("lead score", site="kb", k=2)) == 2


def test_python_client(kb):
    client = sitekb.Client(kb["base"])
    result = client.search("How many points does a demo request add to a lead score?", k=3)  # the only site
    assert result.site == "kb" and result.snapshot_id == kb["live"].snapshot_id and result.mode == "hybrid"
    assert result[0].url == "https://kb.example/lead-scoring.html" and result[0].heading_path[0] == "Lead scoring"
    assert [p.rank for p in result] == [1, 2, 3]
    pinned = client.search("webinar", k=2, site="kb", mode="keyword", snapshot=kb["live"].snapshot_id,
                           tags=["events"])
    assert pinned.alias is None and {p.url for p in pinned} == {"https://kb.example/webinars.html"}
    assert client.search("webinar", mode="keyword", snapshot=kb["live"].snapshot_id).site == "kb"  # site implied
    assert [s["snapshot_id"] for s in client.snapshots("kb")] == [kb["live"].snapshot_id]
    assert client.snapshot(kb["live"].snapshot_id)["site"] == "kb"
    assert client.ready() is True
    with pytest.raises(APIError) as missing:
        client.search("x", site="nosuchsite")
    assert missing.value.status == 404 and "nosuchsite" in str(missing.value)
    with pytest.raises(APIError) as unreachable:
        sitekb.Client("http://127.0.0.1:9", timeout=5).search("x")
    assert unreachable.value.status == 0


def test_site_may_be_left_out_only_when_one_site_is_published(kb):
    with store.connection(kb["admin_url"]) as conn:
        other = make_snapshot(conn, "other", random_pages("other"), dims=384, publish_as="production")
        try:
            status, problem = _call(kb["base"], "/v1/search", {"query": "x", "mode": "keyword"})
            assert status == 422 and "kb, other" in problem["detail"]
        finally:
            conn.execute("DELETE FROM sitekb.alias_events WHERE site = 'other'")
            conn.execute("DELETE FROM sitekb.aliases WHERE site = 'other'")
            snapshots.set_state(conn, other.snapshot_id, "rejected")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reader_sessions(admin_url: str) -> int:
    with store.connection(admin_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'sitekb_reader'").fetchone()[0]


def test_sitekb_serve_command_binds_to_loopback_and_reads_as_the_api_role(kb, tmp_path):
    port = _free_port()
    before = _reader_sessions(kb["admin_url"])
    # The command migrates as the owner (SITEKB_DATABASE_URL) and serves as SITEKB_API_DATABASE_URL.
    env = dict(os.environ, SITEKB_DATABASE_URL=kb["admin_url"], SITEKB_API_DATABASE_URL=kb["reader_url"],
               SITEKB_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "sitekb.cli", "serve", "--port", str(port), "--log-level",
                             "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                status, ready = _call(f"http://127.0.0.1:{port}", "/readyz")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read()) from None
                time.sleep(0.1)
        else:
            raise AssertionError("sitekb serve did not answer")
        assert status == 200 and ready["status"] == "ready"
        assert _reader_sessions(kb["admin_url"]) > before
        if shutil.which("ss"):
            listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
            assert listening.split()[3] == f"127.0.0.1:{port}"   # local address column
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "search page on http://127.0.0.1:" in proc.stderr.read()


def _headers_of(base: str, path: str, host: str | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(base + path, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def test_the_search_page_sends_a_csp_that_allows_only_its_own_hashed_script_and_style(kb):
    import base64
    import hashlib
    import re

    status, headers, html = _headers_of(kb["base"], "/")
    assert status == 200 and headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in headers["content-security-policy"]
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        assert len(bodies) == 1
        digest = base64.b64encode(hashlib.sha256(bodies[0].encode()).digest()).decode()
        assert policy[directive] == f"'self' 'sha256-{digest}'"
    assert not re.search(r"\s(style|on[a-z]+)=", html)            # inline attributes would be blocked
    status, headers, _ = _headers_of(kb["base"], "/v1/snapshots")
    assert status == 200 and headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in headers["content-security-policy"]


def test_a_host_that_is_not_allowed_is_refused(kb):
    port = kb["base"].rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        status, headers, body = _headers_of(kb["base"], "/", host=host or " ")
        assert status == 400 and "SITEKB_ALLOWED_HOSTS" in body, host
        assert headers["x-content-type-options"] == "nosniff"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert _headers_of(kb["base"], "/healthz", host=host)[0] == 200, host


def test_allowed_hosts_come_from_the_settings(kb, monkeypatch):
    monkeypatch.setenv("SITEKB_ALLOWED_HOSTS", "kb.example.org, Search.Example.org:8443")
    settings = Settings.from_env()
    assert settings.allowed_hosts == ("kb.example.org", "Search.Example.org:8443")
    with running_server(api.create_app(settings, database_url=kb["reader_url"])) as base:
        assert _headers_of(base, "/healthz", host="kb.example.org")[0] == 200
        assert _headers_of(base, "/healthz", host="search.example.org")[0] == 200
        assert _headers_of(base, "/healthz", host="localhost")[0] == 200           # loopback stays allowed
        assert _headers_of(base, "/healthz", host="evil.example")[0] == 400
    with running_server(api.create_app(Settings(), database_url=kb["reader_url"], allowed_hosts=["*"])) as base:
        assert _headers_of(base, "/healthz", host="anything.example")[0] == 200


class _Serve:
    """`sitekb serve` in a subprocess on a free loopback port: ``with _Serve(env, args) as s: s.base``."""

    def __init__(self, env: dict, *args: str):
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "sitekb.cli", "serve", "--port", str(self.port),
                                      "--log-level", "warning", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr = ""

    def __enter__(self) -> "_Serve":
        for _ in range(300):
            try:
                _call(self.base, "/healthz")
                return self
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read()) from None
                time.sleep(0.1)
        self.__exit__()
        raise AssertionError("sitekb serve did not answer")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.stderr = self.proc.stderr.read()


def _reader_only_env(reader_url: str, home) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SITEKB_DATABASE_URL", "SITEKB_API_KEYS")}
    return dict(env, SITEKB_API_DATABASE_URL=reader_url, SITEKB_HOME=str(home))


def test_sitekb_serve_with_only_the_reader_url_migrates_nothing_and_serves(kb, tmp_path):
    home = tmp_path / "home"
    before = _reader_sessions(kb["admin_url"])
    with _Serve(_reader_only_env(kb["reader_url"], home)) as served:
        status, ready = _call(served.base, "/readyz")
        assert status == 200 and ready["status"] == "ready"
        status, body = _call(served.base, "/v1/search", {"query": "lead score", "site": "kb", "mode": "keyword"})
        assert status == 200 and body["results"]
        assert _reader_sessions(kb["admin_url"]) > before
    assert not (home / "pgdata").exists()              # no embedded server was started for an owner


@pytest.fixture
def other_database(kb):
    """A URL of an empty database on the same server, as the reader role; dropped afterwards."""
    name = "sitekb_serve_check"
    with store.connection(kb["admin_url"]) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield make_conninfo(kb["admin_url"], dbname=name), make_conninfo(kb["reader_url"], dbname=name)
    with store.connection(kb["admin_url"]) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _serve_fails(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sitekb.cli", "serve", "--port", str(_free_port())], env=env,
                          capture_output=True, text=True, timeout=120)


def test_sitekb_serve_with_only_the_reader_url_refuses_a_missing_or_old_schema(other_database, tmp_path):
    owner_url, reader_url = other_database
    env = _reader_only_env(reader_url, tmp_path / "home")
    missing = _serve_fails(env)
    assert missing.returncode == 3, missing.stderr
    [line] = missing.stderr.strip().splitlines()
    assert "has no sitekb schema" in line and "sitekb db migrate" in line and READER_PASSWORD not in line
    with store.connection(owner_url) as conn:
        store.migrate(conn)
        conn.execute("DELETE FROM public.sitekb_schema_migrations WHERE version = %s", (schema.latest_version(),))
    old = _serve_fails(env)
    assert old.returncode == 3, old.stderr
    assert f"version {schema.latest_version() - 1}, this sitekb needs {schema.latest_version()}" in old.stderr
    assert "sitekb-migrate" in old.stderr


def _cmdline(pid: int) -> str:
    return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()


def test_api_keys_from_a_file_or_the_environment_stay_out_of_ps(kb, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# the search page's key\nfile-key-one\n\n   file-key-two  \n", encoding="utf-8")
    keys.chmod(0o600)
    env = dict(_reader_only_env(kb["reader_url"], tmp_path / "home"), SITEKB_API_KEYS="env-key")
    body = {"query": "lead score", "site": "kb", "mode": "keyword"}
    with _Serve(env, "--api-key-file", str(keys)) as served:
        assert _call(served.base, "/v1/search", body)[0] == 401
        for key in ("file-key-one", "file-key-two", "env-key"):
            assert _call(served.base, "/v1/search", body, {"X-API-Key": key})[0] == 200, key
        assert _call(served.base, "/v1/search", body, {"X-API-Key": "# the search page's key"})[0] == 401
        assert not {"file-key-one", "file-key-two", "env-key"} & set(_cmdline(served.proc.pid).split())
    assert "--api-key" not in served.stderr and "other users" not in served.stderr   # nothing to warn about

    keys.chmod(0o644)
    with _Serve(env, "--api-key-file", str(keys), "--api-key", "argv-key") as served:
        assert _call(served.base, "/v1/search", body, {"X-API-Key": "argv-key"})[0] == 200
        assert _call(served.base, "/v1/search", body, {"X-API-Key": "file-key-one"})[0] == 200
    assert f"the API key file {keys} may be read by other users (mode 644): chmod 600" in served.stderr
    assert "--api-key is visible to every user of this machine" in served.stderr


@pytest.mark.parametrize("content, words", [
    ("# only a comment\n\n", "holds no key"),
    (None, "cannot read the API key file"),
    (b"\xff\xfe key", "not UTF-8"),
])
def test_an_api_key_file_without_keys_is_refused(kb, tmp_path, content, words):
    keys = tmp_path / "keys"
    if isinstance(content, str):
        keys.write_text(content, encoding="utf-8")
    elif content is not None:
        keys.write_bytes(content)
    env = _reader_only_env(kb["reader_url"], tmp_path / "home")
    result = subprocess.run([sys.executable, "-m", "sitekb.cli", "serve", "--port", str(_free_port()),
                             "--api-key-file", str(keys)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and words in result.stderr, result.stderr
