"""Tests for the bundled Northwind Signal demo site and its tiny HTTP server."""

from __future__ import annotations

import email.utils
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

try:
    from sitekb.demo import server as demo_server
except ImportError:  # plugins/ not on sys.path (package not installed)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from sitekb.demo import server as demo_server

DemoSite = demo_server.DemoSite
SITE_DIR = demo_server.SITE_DIR
DEMO_DIR = SITE_DIR.parent

LEAD_SCORING = "/articles/lead-scoring-fundamentals.html"
SYNDICATED_ORIGINAL = "/articles/utm-governance.html"
SYNDICATED_COPY = "/articles/utm-governance-syndicated.html"
BROKEN_LINK = "/articles/this-page-does-not-exist.html"
SPECIAL_LINKS = [
    "/articles/internal-pricing-playbook.html",
    "/articles/partner-program-draft.html",
    "/videos/webinar-lead-scoring-transcript.html",
    SYNDICATED_COPY,
    "/tags/martech.html",
    BROKEN_LINK,
    "/old/lead-scoring.html",
    "/private/roadmap.html",
]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """Return (status, headers, body) without following redirects or raising on 4xx."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def read(rel: str) -> str:
    return (SITE_DIR / rel.lstrip("/")).read_text(encoding="utf-8")


def _strip_tags(fragment: str) -> str:
    fragment = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", fragment)
    text = re.sub(r"(?s)<[^>]+>", " ", fragment)
    text = re.sub(r"&[a-z]+;|&#\d+;", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def main_text(html: str) -> str:
    """Crude main-content text: the <article> element (falls back to <main>)."""
    for tag in ("article", "main"):
        m = re.search(rf"(?is)<{tag}\b[^>]*>(.*?)</{tag}>", html)
        if m:
            return _strip_tags(m.group(1))
    return _strip_tags(html)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:['’][a-z]+)?", text.lower())


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def overlap(a: set, b: set) -> float:
    return len(a & b) / max(1, min(len(a), len(b)))


ARTICLE_FILES = sorted(p for p in (SITE_DIR / "articles").glob("*.html") if p.name != "index.html")


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def site():
    with DemoSite() as s:
        yield s


# --------------------------------------------------------------------------- #
# static content
# --------------------------------------------------------------------------- #
def test_at_least_40_articles_with_300_words_of_main_text():
    assert len(ARTICLE_FILES) >= 42
    short = {}
    for path in ARTICLE_FILES:
        n = len(words(main_text(path.read_text(encoding="utf-8"))))
        if n < 300:
            short[path.name] = n
    assert not short, f"articles under 300 words of main text: {short}"


@pytest.mark.parametrize("path", ARTICLE_FILES, ids=lambda p: p.stem)
def test_article_structure_and_boilerplate(path: Path):
    html = path.read_text(encoding="utf-8")
    assert '<html lang="en">' in html
    assert len(re.findall(r"<h1\b", html)) == 1
    body = re.search(r"(?is)<article\b.*?</article>", html).group(0)
    assert 2 <= len(re.findall(r"<h2\b", body)) <= 4
    assert "<p>" in body
    assert re.search(r"<title>[^<]+</title>", html)
    assert re.search(r'<meta name="description" content="[^"]{20,}">', html)
    assert re.search(r'<meta name="author" content="[^"]+">', html)
    assert re.search(r'<meta property="article:published_time" content="2026-\d\d-\d\dT', html)
    canonical = re.search(r'<link rel="canonical" href="([^"]+)">', html).group(1)
    if path.stem != "utm-governance-syndicated":
        assert canonical == f"/articles/{path.name}"
    for marker in ("<nav", 'class="cookie-banner"', "Subscribe to our newsletter", "Related articles", "<footer"):
        assert marker in html, marker


def test_some_articles_have_lists():
    with_lists = [p for p in ARTICLE_FILES if re.search(r"<(ul|ol)>", main_text_html(p))]
    assert len(with_lists) >= 30


def main_text_html(path: Path) -> str:
    html = path.read_text(encoding="utf-8")
    return re.search(r"(?is)<article\b.*?</article>", html).group(0)


def test_article_texts_are_distinct_except_syndicated_pair():
    grams = {p.name: shingles(main_text(p.read_text(encoding="utf-8"))) for p in ARTICLE_FILES}
    names = sorted(grams)
    intended = {"utm-governance.html", "utm-governance-syndicated.html"}
    offenders = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            score = overlap(grams[a], grams[b])
            if {a, b} == intended:
                assert score > 0.8, f"syndicated pair should be a near-duplicate ({score:.2f})"
            elif score > 0.5:
                offenders.append((a, b, round(score, 2)))
    assert not offenders


def test_index_pages_link_every_article():
    index = read("articles/index.html")
    for path in ARTICLE_FILES:
        assert f'href="/articles/{path.name}"' in index, path.name
    home = read("index.html")
    assert 'href="/articles/"' in home


def test_special_pages_are_linked_somewhere():
    all_html = "\n".join(p.read_text(encoding="utf-8") for p in SITE_DIR.rglob("*.html"))
    for link in SPECIAL_LINKS:
        assert f'href="{link}"' in all_html, link


def test_special_page_markers():
    assert "#do_NOT_train_on_this" in main_text(read("articles/internal-pricing-playbook.html"))
    assert '<meta name="robots" content="noai">' in read("articles/partner-program-draft.html")

    transcript = main_text(read("videos/webinar-lead-scoring-transcript.html"))
    assert len(words(transcript)) >= 300
    assert re.search(r"\[\d\d:\d\d:\d\d\]", transcript)
    for noise in (" um ", " uh ", "you know", "[inaudible]"):
        assert noise in transcript, noise

    copy_html = read(SYNDICATED_COPY)
    assert f'<link rel="canonical" href="{SYNDICATED_ORIGINAL}">' in copy_html
    assert "Originally published on" in copy_html
    assert main_text(copy_html) != main_text(read(SYNDICATED_ORIGINAL))

    tag_text = _strip_tags(re.search(r"(?is)<body>(.*)</body>", read("tags/martech.html")).group(1))
    assert len(words(tag_text)) < 60
    assert 3 <= read("tags/martech.html").count("<li>") <= 5

    assert (SITE_DIR / "private" / "roadmap.html").is_file()
    assert not (SITE_DIR / BROKEN_LINK.lstrip("/")).exists()
    assert 'href="/articles/this-page-does-not-exist.html"' in read(
        "articles/campaign-naming-conventions.html"
    )


def test_golden_questions_parse_and_point_at_existing_pages():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((DEMO_DIR / "golden_questions.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, list) and 8 <= len(data) <= 10
    seen = set()
    for item in data:
        assert set(item) == {"question", "expected_url"}
        assert item["question"].strip().endswith("?")
        url = item["expected_url"]
        assert url.startswith("/articles/") and url.endswith(".html")
        assert (SITE_DIR / url.lstrip("/")).is_file(), url
        seen.add(url)
    assert len(seen) == len(data), "one question per article"


# --------------------------------------------------------------------------- #
# server behaviour
# --------------------------------------------------------------------------- #
def test_home_and_directory_index(site):
    status, headers, body = fetch(site.base_url + "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"Northwind Signal" in body
    status, _, body = fetch(site.base_url + "/articles/")
    assert status == 200 and b"All articles" in body
    status, headers, _ = fetch(site.base_url + "/articles")
    assert status == 301 and headers["Location"] == site.base_url + "/articles/"


def test_robots_txt_disallows_private(site):
    status, headers, body = fetch(site.base_url + "/robots.txt")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "User-agent: *" in text
    assert "Disallow: /private/" in text
    assert f"Sitemap: {site.base_url}/sitemap.xml" in text
    assert "{{BASE_URL}}" not in text
    # the page exists, robots.txt is what excludes it
    assert fetch(site.base_url + "/private/roadmap.html")[0] == 200


def test_sitemap_has_absolute_urls_that_all_resolve(site):
    status, headers, body = fetch(site.base_url + "/sitemap.xml")
    assert status == 200
    assert headers["Content-Type"].startswith("application/xml")
    ns = {"sm": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    root = ET.fromstring(body)
    entries = root.findall("sm:url", ns)
    locs = [e.findtext("sm:loc", namespaces=ns) for e in entries]
    assert len(locs) >= 45
    assert all(e.findtext("sm:lastmod", namespaces=ns) for e in entries)
    for loc in locs:
        assert loc.startswith(site.base_url + "/"), loc
    paths = {loc[len(site.base_url) :] for loc in locs}
    for must in (
        "/",
        "/articles/",
        "/articles/internal-pricing-playbook.html",
        "/articles/partner-program-draft.html",
        SYNDICATED_COPY,
        "/videos/webinar-lead-scoring-transcript.html",
    ):
        assert must in paths, must
    assert "/private/roadmap.html" not in paths
    for loc in locs:
        assert fetch(loc, method="HEAD")[0] == 200, loc


def test_redirect_and_broken_link(site):
    status, headers, _ = fetch(site.base_url + "/old/lead-scoring.html")
    assert status == 301
    assert headers["Location"] == site.base_url + LEAD_SCORING
    assert fetch(headers["Location"])[0] == 200

    status, headers, body = fetch(site.base_url + BROKEN_LINK)
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"not found" in body.lower()


def test_conditional_get_with_etag_and_last_modified(site):
    url = site.base_url + LEAD_SCORING
    status, headers, body = fetch(url)
    assert status == 200
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    assert re.fullmatch(r'"[0-9a-f]{16,64}"', etag)
    assert email.utils.parsedate_to_datetime(last_modified) is not None
    # stable across requests
    again = fetch(url)[1]
    assert again["ETag"] == etag and again["Last-Modified"] == last_modified

    status, headers, body = fetch(url, headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    assert headers["ETag"] == etag

    status, _, _ = fetch(url, headers={"If-Modified-Since": last_modified})
    assert status == 304
    assert fetch(url, headers={"If-None-Match": '"nope"'})[0] == 200
    assert fetch(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})[0] == 200


def test_etag_reflects_substituted_body(site, tmp_path):
    (tmp_path / "sitemap.xml").write_text("<loc>{{BASE_URL}}/x</loc>", encoding="utf-8")
    with DemoSite(site_dir=tmp_path) as a, DemoSite(site_dir=tmp_path) as b:
        assert a.base_url != b.base_url
        ra, rb = fetch(a.base_url + "/sitemap.xml"), fetch(b.base_url + "/sitemap.xml")
        assert ra[2] == f"<loc>{a.base_url}/x</loc>".encode()
        assert rb[2] == f"<loc>{b.base_url}/x</loc>".encode()
        assert ra[1]["ETag"] != rb[1]["ETag"]


def test_head_request(site):
    status, headers, body = fetch(site.base_url + LEAD_SCORING, method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) > 1000
    assert fetch(site.base_url + BROKEN_LINK, method="HEAD")[0] == 404


def test_path_traversal_is_refused(site):
    for path in ("/../server.py", "/%2e%2e/server.py", "/articles/..%2f..%2fserver.py"):
        assert fetch(site.base_url + path)[0] == 404, path


def test_requests_are_recorded(site):
    site.clear_requests()
    fetch(site.base_url + "/robots.txt")
    fetch(site.base_url + "/robots.txt", method="HEAD")
    assert ("GET", "/robots.txt") in site.requests
    assert ("HEAD", "/robots.txt") in site.requests


def test_concurrent_requests(site):
    results: list[int] = []
    lock = threading.Lock()

    def worker():
        status = fetch(site.base_url + "/articles/index.html")[0]
        with lock:
            results.append(status)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [200] * 16


def test_serve_demo_site_falls_back_when_port_busy():
    with DemoSite() as busy:
        other = demo_server.serve_demo_site(port=busy.port)
        try:
            assert other.port != busy.port
            assert fetch(other.base_url + "/")[0] == 200
        finally:
            other.stop()
    # stop() is idempotent and the port is released
    busy.stop()


# --------------------------------------------------------------------------- #
# the origin a request was addressed to (docker-compose crawls sitekb-demo:8765)
# --------------------------------------------------------------------------- #
COMPOSE_ORIGIN = "http://sitekb-demo:8765"
COMPOSE_HOST = {"Host": "sitekb-demo:8765"}


def raw_get(site, path: str, host_lines: bytes) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` with ``host_lines`` sent verbatim as the Host header line(s).

    urllib refuses header values with CR/LF, so hostile Host headers go out on a
    plain socket.
    """
    request = b"GET " + path.encode() + b" HTTP/1.1\r\n" + host_lines + b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def sitemap_locs(body: bytes) -> list[str]:
    return re.findall(r"<loc>([^<]+)</loc>", body.decode("utf-8"))


def test_sitemap_robots_and_redirects_name_the_host_requested(site):
    status, _, body = fetch(site.base_url + "/sitemap.xml", headers=COMPOSE_HOST)
    assert status == 200
    locs = sitemap_locs(body)
    assert len(locs) >= 45
    assert all(loc.startswith(COMPOSE_ORIGIN + "/") for loc in locs), locs[:3]

    text = fetch(site.base_url + "/robots.txt", headers=COMPOSE_HOST)[2].decode()
    assert f"Sitemap: {COMPOSE_ORIGIN}/sitemap.xml" in text
    assert "127.0.0.1" not in text

    status, headers, body = fetch(site.base_url + "/old/lead-scoring.html", headers=COMPOSE_HOST)
    assert status == 301 and headers["Location"] == COMPOSE_ORIGIN + LEAD_SCORING
    assert f'href="{COMPOSE_ORIGIN + LEAD_SCORING}"'.encode() in body
    status, headers, _ = fetch(site.base_url + "/articles", headers=COMPOSE_HOST)
    assert status == 301 and headers["Location"] == COMPOSE_ORIGIN + "/articles/"


def test_each_origin_gets_its_own_etag(site):
    url = site.base_url + "/sitemap.xml"
    ours, theirs = fetch(url)[1]["ETag"], fetch(url, headers=COMPOSE_HOST)[1]["ETag"]
    assert ours != theirs
    # a validator from one origin does not revalidate the other origin's body
    assert fetch(url, headers={**COMPOSE_HOST, "If-None-Match": ours})[0] == 200
    assert fetch(url, headers={**COMPOSE_HOST, "If-None-Match": theirs})[0] == 304


def test_an_ipv6_host_header_is_an_origin(site):
    status, _, body = raw_get(site, "/sitemap.xml", b"Host: [::1]:8765\r\n")
    assert status == 200
    assert all(loc.startswith("http://[::1]:8765/") for loc in sitemap_locs(body))


HOSTILE_HOST_LINES = {
    "path-and-markup": b"Host: evil.example/<script>\r\n",
    "markup": b"Host: evil.example\"><script>alert(1)</script>\r\n",
    "space": b"Host: evil.example attacker\r\n",
    "folded-crlf": b"Host: sitekb-demo:8765\r\n /injected\r\n",
    "tab": b"Host: evil.example\t<script>\r\n",
    "userinfo": b"Host: user@evil.example\r\n",
    "bad-port": b"Host: sitekb-demo:99999\r\n",
    "bad-ipv6": b"Host: [not:an:address]\r\n",
    "underscore": b"Host: evil_example\r\n",
    "empty": b"Host: \r\n",
    "two-hosts": b"Host: sitekb-demo:8765\r\nHost: evil.example\r\n",
    "missing": b"",
}


@pytest.mark.parametrize("host_lines", HOSTILE_HOST_LINES.values(), ids=HOSTILE_HOST_LINES.keys())
def test_a_hostile_or_missing_host_falls_back_to_the_bound_address(site, host_lines):
    status, _, body = raw_get(site, "/sitemap.xml", host_lines)
    assert status == 200
    locs = sitemap_locs(body)
    assert locs and all(loc.startswith(site.base_url + "/") for loc in locs), locs[:3]

    status, _, body = raw_get(site, "/robots.txt", host_lines)
    assert f"Sitemap: {site.base_url}/sitemap.xml" in body.decode()

    status, headers, _ = raw_get(site, "/old/lead-scoring.html", host_lines)
    assert status == 301 and headers["Location"] == site.base_url + LEAD_SCORING


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("sitekb-demo:8765", "http://sitekb-demo:8765"),
        ("sitekb-demo", "http://sitekb-demo"),
        ("127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("Docs.Example.COM", "http://Docs.Example.COM"),
        ("[::1]:80", "http://[::1]:80"),
        ("[::ffff:127.0.0.1]", "http://[::ffff:127.0.0.1]"),
        ("evil.example/<script>", None),
        ("evil.example:80/x", None),
        ("a..b", None),
        ("-leading-dash", None),
        ("host:", None),
        ("host:0", None),
        ("[::1", None),
        ("x" * 64 + ".example", None),
        ("", None),
        (None, None),
    ],
)
def test_origin_from_host(host, origin):
    assert demo_server.origin_from_host(host) == origin


# --------------------------------------------------------------------------- #
# binding beyond loopback
# --------------------------------------------------------------------------- #
def test_loopback_binding_has_no_warning(site):
    assert site.loopback_only and site.exposure_warning() is None


def test_binding_every_interface_warns_and_keeps_a_loopback_base_url():
    with DemoSite(host="0.0.0.0") as exposed:
        assert exposed.base_url == f"http://127.0.0.1:{exposed.port}"
        assert not exposed.loopback_only
        warning = exposed.exposure_warning()
        assert warning and "0.0.0.0" in warning and str(exposed.port) in warning
        # no Host of its own: the bound address, as before
        assert raw_get(exposed, "/robots.txt", b"")[2].decode().count(exposed.base_url) == 1
        locs = sitemap_locs(fetch(exposed.base_url + "/sitemap.xml", headers=COMPOSE_HOST)[2])
        assert locs and all(loc.startswith(COMPOSE_ORIGIN + "/") for loc in locs)


def _run_until_it_prints_its_url(cmd: list[str]) -> tuple[str, str]:
    """Start ``cmd``, wait for the line with its URL, stop it; return (stdout line, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(DEMO_DIR.parents[1]), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "http://" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert "http://" in line, stderr[-2000:]
    return line, stderr


@pytest.mark.parametrize(
    "entry_point",
    [
        [sys.executable, "-m", "sitekb.demo.server"],
        [sys.executable, "-m", "sitekb.cli", "demo"],
    ],
    ids=["module", "sitekb-demo"],
)
def test_entry_points_take_host_and_warn_beyond_loopback(entry_point):
    line, stderr = _run_until_it_prints_its_url([*entry_point, "--host", "0.0.0.0", "--port", "0"])
    assert "http://127.0.0.1:" in line
    assert "warning" in stderr and "0.0.0.0" in stderr

    line, stderr = _run_until_it_prints_its_url([*entry_point, "--port", "0"])
    assert "http://127.0.0.1:" in line
    assert "warning" not in stderr
