"""Hostile input to every route of the HTTP API: refused with a 4xx, never a 500.

Fields are found by walking the app's own OpenAPI spec, so a field added later
is attacked too. The one documented 5xx is 503, for a database or embedding
server that is down, and its body names no server and no credential.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from sitekb import api, store
from sitekb.settings import Settings
from tests.conftest import _reset_schema
from tests.db.factory import TOPICS, Page, make_snapshot, running_server

HOSTILE_TEXT = {"nul": "a\x00b", "lone surrogate": "a\ud800b", "only nul": "\x00", "long": "x" * 100_000}
HOSTILE_INT = {"2^63": 2**63, "-2^63-1": -(2**63) - 1, "10^30": 10**30, "zero": 0, "negative": -1}
SECRET = "hunter2-not-for-clients"


@pytest.fixture(scope="module")
def served(database_server):
    _reset_schema(database_server)
    with store.connection(database_server) as conn:
        store.migrate(conn)
        live = make_snapshot(conn, "kb", TOPICS, embed=True, publish_as="production")
        down = make_snapshot(conn, "down", TOPICS[:2], embed=True, publish_as="production")
        # A snapshot embedded by an OpenAI-compatible server, which is not running.
        conn.execute("UPDATE sitekb.snapshots SET embedding_provider = 'openai', "
                     "embedding_model = 'text-embedding-3-small' WHERE snapshot_id = %s", (down.snapshot_id,))
    settings = Settings(openai_api_key=f"sk-{SECRET}", openai_base_url=f"http://user:{SECRET}@127.0.0.1:9/v1")
    app = api.create_app(settings, database_url=database_server)
    with running_server(app) as base:
        yield {"base": base, "app": app, "live": live, "down": down}


def _send(base: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    # ensure_ascii: a lone surrogate travels as the JSON escape \ud800, as an attacker sends it.
    data = None if body is None else json.dumps(body, ensure_ascii=True).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _fields(spec: dict, schema: dict, prefix: tuple = ()):
    """(path, type) of every string and integer leaf of a request schema, through $refs, nullables and arrays."""
    if "$ref" in schema:
        yield from _fields(spec, spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], prefix)
        return
    for option in schema.get("anyOf", []):
        yield from _fields(spec, option, prefix)
    kind = schema.get("type")
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from _fields(spec, sub, (*prefix, name))
    elif kind == "array":
        yield from _fields(spec, schema["items"], (*prefix, 0))
    elif kind in ("string", "integer") and "enum" not in schema and schema.get("format") not in ("date",):
        yield prefix, kind


def _with(path: tuple, value) -> dict:
    """A valid search body with ``value`` at ``path``."""
    body: dict = {"query": "lead score", "site": "kb", "mode": "keyword"}
    node = body
    for step, following in zip(path, (*path[1:], None)):
        if following is None:
            break
        node = node.setdefault(step, [] if isinstance(following, int) else {})
    if isinstance(path[-1], int):
        node.append(value)
    else:
        node[path[-1]] = value
    return body


def _post_cases(spec: dict):
    for route, methods in spec["paths"].items():
        if "post" not in methods:
            continue
        schema = methods["post"]["requestBody"]["content"]["application/json"]["schema"]
        for field, kind in dict.fromkeys(_fields(spec, schema)):
            for name, value in (HOSTILE_TEXT if kind == "string" else HOSTILE_INT).items():
                yield route, field, name, value


def test_every_post_field_refuses_hostile_values_with_a_4xx(served):
    spec = served["app"].openapi()
    cases = list(_post_cases(spec))
    fields = {(route, field) for route, field, _, _ in cases}
    assert {("/v1/search", ("query",)), ("/v1/search", ("filters", "tags", 0)),
            ("/v1/search", ("snapshot",)), ("/v1/search", ("k",))} <= fields
    failures = []
    for route, field, name, value in cases:
        status, text, _ = _send(served["base"], "POST", route, _with(field, value))
        if not 400 <= status < 500:
            failures.append((route, ".".join(map(str, field)), name, status, text[:200]))
    assert not failures


@pytest.mark.parametrize("path", [
    f"/v1/snapshots/{2**63}", f"/v1/snapshots/{-(2**63) - 1}", "/v1/snapshots/0",
    "/v1/snapshots?site=" + urllib.parse.quote("a\x00b"), "/v1/snapshots?site=%ED%A0%80",
    f"/v1/snapshots?limit={2**63}",
])
def test_get_routes_refuse_hostile_values_with_a_4xx(served, path):
    status, text, _ = _send(served["base"], "GET", path)
    assert 400 <= status < 500, text


def test_a_bigint_snapshot_id_is_accepted_up_to_the_limit(served):
    status, text, _ = _send(served["base"], "POST", "/v1/search",
                            {"query": "x", "site": "kb", "snapshot": 2**63 - 1, "mode": "keyword"})
    assert status == 404 and "not available" in text


def test_an_embedding_server_that_is_down_is_a_503_without_credentials(served):
    status, text, headers = _send(served["base"], "POST", "/v1/search", {"query": "webinar", "site": "down"})
    assert status == 503, text
    assert "embedding server" in json.loads(text)["detail"]
    assert SECRET not in text and "127.0.0.1:9" not in text
    assert _send(served["base"], "POST", "/v1/search",
                 {"query": "webinar", "site": "down", "mode": "keyword"})[0] == 200   # no embedding needed


def test_the_openapi_spec_bounds_ids_to_bigint(served):
    spec = served["app"].openapi()
    snapshot = spec["components"]["schemas"]["SearchRequest"]["properties"]["snapshot"]["anyOf"][0]
    assert 2**63 - 1 <= snapshot["maximum"] <= 2**63     # the spec's JSON number rounds it to a float


def test_titles_and_headings_leave_the_query_path_as_plain_text(served, database_server):
    with store.connection(database_server) as conn:
        make_snapshot(conn, "markup", [Page(
            "https://kb.example/pricing.html", "<img src=x onerror=alert(1)>Pricing &amp; <b>plans</b>",
            ["Plans are billed monthly; the annual plan saves two months."],
            headings=["<script>alert(2)</script>Billing", "&lt;i&gt;Annual&lt;/i&gt; plans"], tags=["sales"])],
            embed=True, publish_as="production")
    status, text, _ = _send(served["base"], "POST", "/v1/search",
                            {"query": "annual plan", "site": "markup", "mode": "keyword"})
    assert status == 200, text
    top = json.loads(text)["results"][0]
    assert top["title"] == "Pricing & plans"
    assert top["heading_path"] == ["Billing", "Annual plans"]
    assert "<" not in text and "alert" not in text
