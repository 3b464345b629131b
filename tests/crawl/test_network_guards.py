"""The crawler's network guards, checked where connections are made.

- The start-URL pre-check (``check_reachable``) applies the crawler's address
  rule and follows no redirect (to ``ftp:`` or to another host).
- DNS rebinding: inside a network namespace this test creates (``unshare -n``),
  a hostile name answers a "public" address first and 127.0.0.1 after; the
  crawler's resolver checks each answer it connects to, so the loopback server
  receives nothing. 203.0.113.7 (TEST-NET, not globally routable) stands in for
  a public address there, declared public by the script only. No traffic leaves
  127.0.0.1 or the namespace.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sitekb.errors import CrawlFailed
from sitekb.stages.crawl import check_reachable
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import FixtureSite, html_reply, page, redirect

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def web():
    with FixtureSite() as site:
        yield site


@pytest.fixture
def listener():
    """A bare TCP port on 127.0.0.1 that records whether anyone connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def test_check_reachable_refuses_a_private_start_url_unless_allowed(web):
    web.add("/", html_reply(page("Home")))
    with pytest.raises(CrawlFailed, match="private address"):
        check_reachable(site_config(web.base_url, allow_private_addresses=False))
    assert web.paths() == []     # refused before any byte was sent
    check_reachable(site_config(web.base_url))   # allowed: reachable
    assert web.paths() == ["/"]


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:{port}/secret", "http://localhost:{port}/admin",
                                    "http://127.0.0.1:{port}/"])
def test_check_reachable_follows_no_redirect(web, listener, target):
    web.add("/", redirect(target.format(port=listener.getsockname()[1]), 302))
    check_reachable(site_config(web.base_url))   # a 3xx answer: the site is up
    assert web.paths() == ["/"]
    assert not connected(listener)


def test_check_reachable_refuses_other_schemes():
    config = site_config("http://127.0.0.1:9").model_copy(update={"start_urls": ["ftp://127.0.0.1:9/"]})
    with pytest.raises(CrawlFailed, match="not an http"):
        check_reachable(config)


def test_check_reachable_reports_a_dead_site(listener):
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(CrawlFailed, match="unreachable"):
        check_reachable(site_config(f"http://127.0.0.1:{port}"))


REBINDING_SCRIPT = textwrap.dedent('''
    import http.server, json, socket, threading

    import scrapy
    from scrapy.crawler import CrawlerProcess

    from sitekb.sites import SiteConfig
    from sitekb_crawlers import parsers
    from sitekb_crawlers.settings import crawl_settings

    PUBLIC = "203.0.113.7"
    real_public = parsers.is_public_address
    # Test-only: the TEST-NET address on this namespace's lo plays a public web server.
    parsers.is_public_address = lambda address: str(address) == PUBLIC or real_public(address)

    hits = {PUBLIC: [], "127.0.0.1": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.server.server_address[0]].append(self.path)
            body = b"<html><head><title>t</title></head><body><a href=/next>next</a></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")   # every request resolves the name again
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    for ip in hits:
        server = http.server.ThreadingHTTPServer((ip, 8080), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    # The hostile name server: a public answer first, loopback ever after.
    lookups = []

    def answer():
        lookups.append(1)
        return PUBLIC if len(lookups) == 1 else "127.0.0.1"

    real_getaddrinfo, real_gethostbyname = socket.getaddrinfo, socket.gethostbyname
    socket.getaddrinfo = lambda host, *rest, **kw: real_getaddrinfo(
        answer() if host == "rebind.test" else host, *rest, **kw)
    socket.gethostbyname = lambda host: answer() if host == "rebind.test" else real_gethostbyname(host)

    site = SiteConfig.model_validate({"name": "rebind", "start_urls": ["http://rebind.test:8080/"], "crawl": {
        "download_delay": 0, "retries": 0, "timeout_seconds": 5, "obey_robots_txt": False,
        "contact_url": "http://127.0.0.1/bot"}})
    settings = crawl_settings(site, run_id="r", database_url="unused")
    settings.update({"ITEM_PIPELINES": {}, "CONCURRENT_REQUESTS": 1, "LOG_LEVEL": "CRITICAL"})
    results = []

    class Probe(scrapy.Spider):
        name = "probe"

        async def start(self):
            yield scrapy.Request("http://rebind.test:8080/", callback=self.parse, errback=self.failed)

        def parse(self, response):
            results.append(["ok", response.url, str(response.ip_address)])
            if response.url != "http://rebind.test:8080/":
                return
            for path in ("/next", "/again"):
                yield scrapy.Request("http://rebind.test:8080" + path, dont_filter=True, callback=self.parse,
                                     errback=self.failed)

        def failed(self, failure):
            results.append(["failed", failure.request.url, failure.type.__name__])

    process = CrawlerProcess(settings)
    process.crawl(Probe)
    process.start()
    print(json.dumps({"hits": hits, "results": results, "lookups": len(lookups)}))
''')


def unshare_permitted() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True).returncode == 0


@pytest.mark.skipif(not unshare_permitted(), reason="needs `unshare -n` (a network namespace: root or user "
                                                    "namespaces) and `ip` to test DNS rebinding in isolation")
def test_dns_rebinding_never_reaches_loopback(tmp_path):
    script = tmp_path / "rebind.py"
    script.write_text(REBINDING_SCRIPT)
    shell = (f"ip link set lo up && ip addr add 203.0.113.7/32 dev lo && "
             f"exec {sys.executable} {script}")
    done = subprocess.run(["unshare", "-n", "sh", "-c", shell], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["hits"]["203.0.113.7"] == ["/"], report      # the first, public answer was fetched
    assert report["lookups"] >= 2, report                        # the name was asked again
    assert report["hits"]["127.0.0.1"] == [], report             # ...and its loopback answer never used
    assert ["ok", "http://rebind.test:8080/", "203.0.113.7"] in report["results"]
    assert {r[2] for r in report["results"] if r[0] == "failed"} == {"CannotResolveHostError"}, report   # a failed fetch, retried, counted
