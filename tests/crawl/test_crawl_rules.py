"""One real crawl of a fixture site that exercises every rule at once.

The site (served on 127.0.0.1) holds normal pages and one page per rule:
opt-outs of every kind, scope limits, spider traps, redirects, politeness
signals (429/503 with Retry-After, a 5xx storm, a slow-drip response) and bad
input. The crawl runs through ``sitekb.stages.crawl.crawl_site`` into the real
database; the tests check exactly which URLs were fetched, skipped and why,
from ``sitekb.pages``, ``sitekb.exclusions``, the returned statistics and
the server's own request log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from sitekb import engine, stages, store
from sitekb.settings import Settings
from sitekb.stages.crawl import crawl_site
from tests.conftest import _reset_schema
from tests.crawl.conftest import AGENT, read_back, site_config
from tests.crawl.fixture_site import (
    FixtureSite,
    Reply,
    html_reply,
    minimal_pdf,
    page,
    raw,
    redirect,
    sitemap,
    sitemap_index,
)

FACETS = [f"/facets?color={c}&size={s}" for c in ("red", "blue", "green") for s in ("s", "m", "l", "xl")]
LONG_PATH = "/long/" + "x" * 2100
HOME_LINKS = [
    "/ok/1.html?utm_source=newsletter&utm_medium=email#top", "/ok/3.html?b=2&a=1", "/ok/3.html?a=1&b=2",
    "/noai.html", "/noindex-header.html", "/other-bot.html", "/our-bot.html", "/tdm-meta.html",
    "/tdm-header.html", "/reserved/report.html", "/label.html", "/label-keywords.html", "/nosnippet.html",
    "/canonical-copy.html", "/private/secret.html", "/nofollow.html", "/skip/me.html", "/gone.html",
    "/missing.html", "/redirect-out", "/redirect-in", "/loop/a", "/chain/1", "/calendar?month=0", "/cal/1/",
    "/facets", "/session?sid=first", "/repeat/", "/doc.pdf", "/broken.pdf", "/image.png", "/big.html",
    "/binary.html", "/latin1.html", "/nocharset.html", "/malformed.html", "/slow.html", "/busy.html",
    "/unavailable.html", "/storm/1", "/storm/2", "/storm/3", "/storm/4", "/forbidden.html", "/retry-later.html",
    LONG_PATH, "http://example.invalid/elsewhere", "mailto:owner@example.com", "javascript:void(0)",
]
OPTED_OUT_MARKER = "OPTEDOUTMARKER"


def build_site(web: FixtureSite) -> None:
    b = web.base_url
    add = web.add
    add("/robots.txt", raw(f"User-agent: *\nDisallow: /private/\nSitemap: {b}/sitemap_index.xml\n".encode(),
                           "text/plain"))
    add("/sitemap_index.xml", sitemap_index(b, ["/sitemap-pages.xml", "/sitemap-more.xml.gz"]))
    add("/sitemap-pages.xml", sitemap(b, [("/ok/1.html", "2024-01-01"), ("/ok/2.html", None)]))
    add("/sitemap-more.xml.gz", sitemap(b, [("/from-gz.html", "2024-02-01")], gz=True))
    add("/.well-known/tdmrep.json", raw(json.dumps([
        {"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://example.com/tdm-policy.json"},
        {"location": "/", "tdm-reservation": 0},
    ]).encode(), "application/json"))
    add("/", html_reply(page("Home", links=HOME_LINKS)))
    for path in ("/ok/1.html", "/ok/2.html", "/ok/3.html", "/from-gz.html", "/other-bot.html"):
        add(path, html_reply(page(f"Page {path}")))
    web.routes["/other-bot.html"] = html_reply(page("Other bot"), headers={"X-Robots-Tag": "otherbot: noai"})
    secret = f"<p>{OPTED_OUT_MARKER}</p>"
    add("/noai.html", html_reply(page("No AI", secret, head='<meta name="robots" content="noai, noimageai">')))
    add("/noindex-header.html", html_reply(page("Header", secret), headers={"X-Robots-Tag": "noindex"}))
    add("/our-bot.html", html_reply(page("Ours", secret), headers={"X-Robots-Tag": f"{AGENT}: noai"}))
    add("/tdm-meta.html", html_reply(page("TDM", secret, head='<meta name="tdm-reservation" content="1">')))
    add("/tdm-header.html", html_reply(page("TDM header", secret), headers={"tdm-reservation": "1"}))
    add("/reserved/report.html", html_reply(page("Reserved", secret)))
    add("/label.html", html_reply(page("Label", f"<p>Internal only #do_NOT_train_on_this {OPTED_OUT_MARKER}</p>")))
    add("/label-keywords.html", html_reply(page(
        "Keywords", secret, head='<meta name="keywords" content="pricing, #do_NOT_train_on_this">')))
    add("/nosnippet.html", html_reply(page(
        "Snippets", '<div data-nosnippet><p>NOSNIPPETSECRET one</p></div><p data-nosnippet="">NOSNIPPETSECRET two</p>'
        "<p>Visible closing paragraph about campaign calendars.</p>")))
    add("/canonical-copy.html", html_reply(page(
        "Copy", secret, head=f'<link rel="canonical" href="{b}/ok/2.html">')))
    add("/private/secret.html", html_reply(page("Private", secret)))
    add("/nofollow.html", html_reply(page("No follow", head='<meta name="robots" content="nofollow">',
                                          links=["/only-via-nofollow.html"])))
    add("/only-via-nofollow.html", html_reply(page("Hidden")))
    add("/skip/me.html", html_reply(page("Skip")))
    add("/gone.html", raw(b"<html><body>gone</body></html>", "text/html", status=410))
    add("/redirect-out", redirect("http://example.invalid/landing", 302))
    add("/redirect-in", redirect(b + "/ok/2.html"))
    add("/loop/a", redirect("/loop/b"))
    add("/loop/b", redirect("/loop/a"))
    web.add_prefix("/chain/", lambda r: Reply(302, b"", {"Location": f"/chain/{int(r.bare_path.rsplit('/', 1)[1]) + 1}"}))
    web.add_prefix("/calendar", lambda r: html_reply(page(
        f"Calendar {r.query}", links=[f"/calendar?month={int(r.query.split('=')[1]) + 1}"]))(r))
    web.add_prefix("/cal/", lambda r: html_reply(page(
        f"Cal {r.bare_path}", links=[f"/cal/{int(r.bare_path.strip('/').split('/')[1]) + 1}/"]))(r))
    add("/facets", html_reply(page("Facets", links=FACETS)))
    web.add_prefix("/facets?", lambda r: html_reply(page(f"Facet {r.query}", links=FACETS))(r))
    web.add_prefix("/session", lambda r: html_reply(page("Session", links=[f"/session?sid={len(web.hits)}"]))(r))
    web.add_prefix("/repeat/", lambda r: html_reply(page(f"Repeat {r.bare_path}", links=["a/"]))(r))
    add("/doc.pdf", raw(minimal_pdf("Pricing guide", [
        "Our pricing has three tiers: starter, growth and enterprise.",
        "Annual contracts get two months free.",
    ]), "application/pdf"))
    add("/broken.pdf", raw(b"%PDF-1.4 this is not really a pdf", "application/pdf"))
    add("/image.png", raw(b"\x89PNG\r\n\x1a\n" + b"\x00" * 2_000_000, "image/png"))
    add("/big.html", html_reply(page("Big", "<p>" + "word " * 60_000 + "</p>")))
    add("/binary.html", raw(bytes(range(256)) * 40, "text/html"))
    add("/latin1.html", raw(page("Caf\u00e9 cr\u00e8me menu").replace('<meta charset="utf-8">', "")
                            .encode("latin-1"), "text/html; charset=utf-8"))
    add("/nocharset.html", raw(page("Na\u00efve r\u00e9sum\u00e9").replace('<meta charset="utf-8">', "")
                               .encode("utf-8"), "text/html"))
    add("/malformed.html", raw(b"<html><head><title>Broken</title></head><body><div><p>Unclosed <b>bold <i>"
                               b"and italic</div></span></p><p>Still readable text about campaigns.</body>",
                               "text/html; charset=utf-8"))
    add("/slow.html", lambda r: Reply(200, page("Slow").encode() * 3, {"Content-Type": "text/html"},
                                      drip_seconds=6))
    busy_calls = []

    def busy(request):
        busy_calls.append(1)
        if len(busy_calls) == 1:
            return Reply(429, b"slow down", {"Retry-After": "1", "Content-Type": "text/plain"})
        return html_reply(page("Busy but fine"))(request)

    add("/busy.html", busy)
    add("/unavailable.html", raw(b"maintenance", "text/plain", status=503, headers={"Retry-After": "1"}))
    web.add_prefix("/storm/", raw(b"boom", "text/plain", status=500))
    add("/forbidden.html", raw(b"no", "text/plain", status=403))
    add("/retry-later.html", raw(b"later", "text/plain", status=429, headers={"Retry-After": "3600"}))


@dataclass
class MainCrawl:
    web: FixtureSite
    stats: dict
    pages: dict
    exclusions: dict
    documents: dict
    crawl_stats_row: dict

    def fetched(self) -> set[str]:
        """Pages stored with content."""
        return {url for url, row in self.pages.items() if row["body"] is not None and row["excluded_rule"] is None}

    def ruled(self, rule: str) -> set[str]:
        return {url for url, rules in self.exclusions.items() if rule in rules}


@pytest.fixture(scope="module")
def main_crawl(database_server):
    _reset_schema(database_server)
    with store.connection(database_server) as conn:
        store.migrate(conn)
    with FixtureSite() as web:
        build_site(web)
        config = site_config(
            web.base_url, max_depth=3, max_query_variants=5, max_segment_repeats=2, max_page_bytes=200_000,
            timeout_seconds=1.5, exclude_patterns=["/skip/"],
        )
        settings = Settings.from_env(database_url=database_server)
        with store.connection(database_server) as conn:
            stats = crawl_site(conn, config, "main-1", database_server)
            pages, exclusions = read_back(conn, web.base_url, "main-1")
            engine.start(conn, settings, config, "main-1")
            engine.execute(stages.get("extract"), engine.context(conn, settings, database_server, "main-1"))
            documents = {url.removeprefix(web.base_url): (title, markdown) for url, title, markdown in conn.execute(
                "SELECT url, title, markdown FROM sitekb.documents WHERE run_id = 'main-1'")}
            row = conn.execute("SELECT full_crawl, fetched, excluded, errors, bad_input, bytes "
                               "FROM sitekb.crawl_stats WHERE run_id = 'main-1'").fetchone()
        yield MainCrawl(web, stats, pages, exclusions, documents,
                        dict(zip(("full", "fetched", "excluded", "errors", "bad_input", "bytes"), row)))


def test_exactly_these_pages_are_stored_with_content(main_crawl):
    assert main_crawl.fetched() == {
        "/", "/ok/1.html", "/ok/2.html", "/ok/3.html?a=1&b=2", "/from-gz.html", "/other-bot.html",
        "/nosnippet.html", "/nofollow.html", "/calendar?month=0", "/calendar?month=1", "/calendar?month=2",
        "/cal/1/", "/cal/2/", "/cal/3/", "/facets", *[f for f in FACETS[:5]], "/session", "/repeat/",
        "/repeat/a/", "/repeat/a/a/", "/doc.pdf", "/latin1.html", "/nocharset.html", "/malformed.html",
        "/busy.html",
    }
    # Sorted query, no tracking parameters, no fragment, no session id.
    assert not any("utm_" in url or "#" in url or "sid=" in url for url in main_crawl.pages)


def test_opt_outs_are_excluded_with_their_rule(main_crawl):
    expected = {
        "/noai.html": "robots-meta",
        "/noindex-header.html": "x-robots-tag",
        "/our-bot.html": "x-robots-tag",          # 'sitekb-test: noai' names our agent
        "/tdm-meta.html": "tdm-reservation",
        "/tdm-header.html": "tdm-reservation",
        "/reserved/report.html": "tdm-reservation",  # /.well-known/tdmrep.json
        "/label.html": "label",
        "/label-keywords.html": "label",
        "/private/secret.html": "robots-txt",
        "/canonical-copy.html": "canonical",
        "/skip/me.html": "excluded-pattern",
    }
    for url, rule in expected.items():
        assert rule in main_crawl.exclusions.get(url, set()), (url, main_crawl.exclusions.get(url))
    excluded = main_crawl.stats["excluded"]
    assert excluded["tdm-reservation"] == 3 and excluded["label"] == 2 and excluded["x-robots-tag"] == 2
    # An X-Robots-Tag for another bot does not exclude.
    assert "/other-bot.html" in main_crawl.fetched()


def test_reserved_and_disallowed_urls_are_never_requested(main_crawl):
    requested = set(main_crawl.web.paths())
    for path in ("/reserved/report.html", "/private/secret.html", "/skip/me.html", "/only-via-nofollow.html",
                 "/calendar?month=3", "/cal/4/", "/repeat/a/a/a/", LONG_PATH):
        assert path not in requested, path


def test_excluded_pages_keep_no_content_anywhere(main_crawl):
    for url, row in main_crawl.pages.items():
        if row["excluded_rule"] is not None:
            assert row["body"] is None and row["content_hash"] is None and row["etag"] is None, url
            assert row["links"] == [], url
    assert not any(OPTED_OUT_MARKER in (row["body"] or "") for row in main_crawl.pages.values())
    assert not any(OPTED_OUT_MARKER in markdown for _, markdown in main_crawl.documents.values())
    for url in ("/noai.html", "/label.html", "/tdm-meta.html", "/canonical-copy.html"):
        assert url not in main_crawl.documents


def test_nosnippet_sections_are_cut_before_storage_and_extraction(main_crawl):
    stored = main_crawl.pages["/nosnippet.html"]["body"]
    assert "NOSNIPPETSECRET" not in stored and "Visible closing paragraph" in stored
    title, markdown = main_crawl.documents["/nosnippet.html"]
    assert "NOSNIPPETSECRET" not in markdown and "Visible closing paragraph" in markdown
    assert main_crawl.stats["nosnippet_pages"] == 1


def test_pdf_text_is_stored_and_extracted(main_crawl):
    row = main_crawl.pages["/doc.pdf"]
    assert row["content_type"] == "application/pdf"
    assert row["body"].startswith("# Pricing guide") and "three tiers" in row["body"]
    title, markdown = main_crawl.documents["/doc.pdf"]
    assert title == "Pricing guide" and "Annual contracts get two months free." in markdown
    assert main_crawl.stats["fetched_pdf"] == 1
    assert "unreadable-pdf" in main_crawl.exclusions["/broken.pdf"]


def test_scope_limits_and_traps_stop(main_crawl):
    skipped = main_crawl.stats["skipped"]
    assert main_crawl.ruled("max-depth") >= {"/calendar?month=3", "/cal/4/"}
    assert main_crawl.ruled("query-variants") == set(FACETS[5:])
    assert main_crawl.ruled("repeated-segments") == {"/repeat/a/a/a/"}
    assert main_crawl.ruled("url-too-long") == {LONG_PATH}
    assert skipped["query-variants"] == 7 and skipped["repeated-segments"] == 1
    # The session id is stripped: every page of /session links to itself under a new id.
    assert main_crawl.web.paths().count("/session") == 1


def test_content_types_and_size_cap(main_crawl):
    assert "content-type" in main_crawl.exclusions["/image.png"]
    assert "too-large" in main_crawl.exclusions["/big.html"]
    assert main_crawl.stats["skipped"]["too-large"] == 1
    # The image was abandoned after its headers: far fewer than its 2 MB were read.
    assert main_crawl.stats["bytes"] < 1_500_000


def test_redirects(main_crawl):
    assert "off-domain" in main_crawl.exclusions["/redirect-out"]   # a redirect leaving the scope
    assert "/redirect-out" not in main_crawl.pages
    assert main_crawl.web.paths().count("/ok/2.html") == 1          # /redirect-in lands on a known page
    assert main_crawl.stats["errors"]["redirect_loop"] == 1
    assert main_crawl.stats["errors"]["redirect_limit"] == 1
    chain = [p for p in main_crawl.web.paths() if p.startswith("/chain/")]
    assert chain == [f"/chain/{n}" for n in range(1, 7)]             # REDIRECT_MAX_TIMES=5, then given up


def test_politeness_retry_after_and_backoff(main_crawl):
    web = main_crawl.web
    busy = web.hits_of("/busy.html")
    assert len(busy) == 2 and "/busy.html" in main_crawl.fetched()
    # Retry-After: 1 was honoured: the retry came no sooner (a lower bound, never flaky).
    assert busy[1].at - busy[0].at >= 0.9
    assert len(web.hits_of("/unavailable.html")) == 2              # 503 retried once, then given up
    assert len(web.hits_of("/forbidden.html")) == 1                # permanent: no retry
    assert len(web.hits_of("/gone.html")) == 1
    assert len(web.hits_of("/retry-later.html")) == 1              # Retry-After beyond max_retry_after
    assert main_crawl.stats["retry_after_too_long"] == 1
    for n in range(1, 5):
        assert len(web.hits_of(f"/storm/{n}")) == 2
    errors = main_crawl.stats["errors"]
    assert errors["http_500"] == 4 and errors["http_503"] == 1 and errors["http_403"] == 1
    assert errors["http_410"] == 1 and errors["http_404"] == 1 and errors["http_429"] == 1


def test_identifiable_user_agent(main_crawl):
    agents = {hit.headers.get("user-agent") for hit in main_crawl.web.hits}
    assert agents == {f"{AGENT}/1.0 (+http://127.0.0.1/bot-contact)"}


def test_bad_input_is_counted_and_never_stops_the_crawl(main_crawl):
    stats = main_crawl.stats
    assert stats["finish_reason"] == "finished"
    bad = stats["bad_input"]
    assert bad["binary_body"] == 1 and bad["charset_mismatch"] == 1 and bad["charset_missing"] >= 1
    assert bad["malformed_html"] >= 1 and bad["pdf_unreadable"] == 1
    assert stats["errors"]["timeout"] == 1                          # the slow-drip page
    assert len(main_crawl.web.hits_of("/slow.html")) == 2           # a timeout is transient: retried once
    assert "Caf\u00e9 cr\u00e8me" in main_crawl.pages["/latin1.html"]["body"]
    assert "Na\u00efve r\u00e9sum\u00e9" in main_crawl.pages["/nocharset.html"]["body"]
    assert "Still readable text" in main_crawl.pages["/malformed.html"]["body"]
    assert "not-text" in main_crawl.exclusions["/binary.html"]


def test_gone_pages_keep_no_body(main_crawl):
    assert main_crawl.pages["/gone.html"]["status"] == 410 and main_crawl.pages["/gone.html"]["body"] is None
    assert main_crawl.pages["/missing.html"]["status"] == 404
    assert "/gone.html" not in main_crawl.documents and "/missing.html" not in main_crawl.documents


def test_run_statistics_are_stored(main_crawl):
    row = main_crawl.crawl_stats_row
    assert row["full"] is True                     # the first crawl of a site is a full one
    assert row["fetched"] == main_crawl.stats["fetched"] > 20
    assert row["excluded"] == main_crawl.stats["excluded"] and row["errors"] == main_crawl.stats["errors"]
    assert row["bad_input"]["binary_body"] == 1 and row["bytes"] > 0
