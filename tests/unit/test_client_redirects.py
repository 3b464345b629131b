"""The Python client sends its API key to the configured origin only, redirects included.

Two real HTTP servers on 127.0.0.1: different ports are different origins.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sitekb


class _Recorder(BaseHTTPRequestHandler):
    """Answers JSON, or a redirect for paths listed in ``server.redirects``; records each request's headers."""

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("X-API-Key")))
        target = self.server.redirects.get(self.path.split("?")[0])
        if target:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"status": "ready", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    started = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.seen, server.redirects = [], {}
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield [(s, f"http://127.0.0.1:{s.server_address[1]}") for s in started]
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_another_origin_is_followed_without_the_key(servers):
    (home, home_url), (other, other_url) = servers
    home.redirects["/readyz"] = other_url + "/readyz"
    assert sitekb.Client(home_url, api_key="s3cret").ready() is True
    assert home.seen == [("/readyz", "Bearer s3cret", None)]
    assert other.seen == [("/readyz", None, None)]          # the other port never saw the key


def test_a_redirect_on_the_same_origin_keeps_the_key(servers):
    (home, home_url), _ = servers
    home.redirects["/v1/snapshots"] = "/v1/snapshots/"
    home.redirects["/v1/snapshots/"] = home_url + "/v1/snapshots/7"
    sitekb.Client(home_url, api_key="s3cret").snapshots()
    assert [auth for _, auth, _ in home.seen] == ["Bearer s3cret"] * 3


def test_a_redirect_chain_that_leaves_and_comes_back_never_shows_the_key_outside(servers):
    (home, home_url), (other, other_url) = servers
    home.redirects["/readyz"] = other_url + "/bounce"
    other.redirects["/bounce"] = home_url + "/readyz/back"
    assert sitekb.Client(home_url, api_key="s3cret").ready() is True
    assert other.seen == [("/bounce", None, None)]
    assert home.seen[-1] == ("/readyz/back", "Bearer s3cret", None)   # back home, the key is the origin's
