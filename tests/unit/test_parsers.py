"""The crawler's pure functions on inline inputs: no network, no Scrapy, no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sitekb.extract import is_text_page, text_document
from sitekb.sites import SiteConfig
from sitekb_crawlers import parsers
from sitekb_crawlers.frontier import CLOSER, SEEN, Frontier
from sitekb_crawlers.pdf import PdfUnreadable, pdf_text
from tests.crawl.fixture_site import minimal_pdf

STRIP = ["utm_*", "gclid", "jsessionid", "sid"]


def site(**opt_out) -> SiteConfig:
    return SiteConfig.model_validate({
        "name": "t", "start_urls": ["https://example.com/"],
        "crawl": {"exclude_patterns": [r"/admin/"], "include_patterns": [], "allowed_domains": ["example.com"]},
        "opt_out": opt_out,
    })


# -- URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("HTTP://Example.COM:80/a/b.html#section", "http://example.com/a/b.html"),
    ("https://example.com:443", "https://example.com/"),
    ("https://example.com/p?utm_source=x&b=2&UTM_Medium=y&a=1&gclid=z", "https://example.com/p?a=1&b=2"),
    ("https://example.com/p?sid=123", "https://example.com/p"),
    ("https://example.com/cart;jsessionid=ABC123?x=1", "https://example.com/cart?x=1"),
    ("https://example.com/a/./b/../c/%7euser/%2f", "https://example.com/a/c/~user/%2F"),
    ("https://example.com/caf\u00e9 menu", "https://example.com/caf%C3%A9%20menu"),
    ("https://example.com/search?q=a+b&q=c%20d", "https://example.com/search?q=a+b&q=c%20d"),
])
def test_normalize_url(url, expected):
    assert parsers.normalize_url(url, STRIP) == expected


def test_normalize_url_is_configurable():
    url = "https://example.com/p?b=2&utm_source=x&a=1"
    assert parsers.normalize_url(url, [], sort_query=False) == "https://example.com/p?b=2&utm_source=x&a=1"
    assert parsers.normalize_url(url, ["utm_source"], sort_query=False) == "https://example.com/p?b=2&a=1"
    # One normal form: normalising twice changes nothing.
    once = parsers.normalize_url(url, STRIP)
    assert parsers.normalize_url(once, STRIP) == once


def test_scope_rules():
    scope = parsers.Scope.of(site())
    assert scope.why_out("https://example.com/page") is None
    assert scope.why_out("https://blog.example.com/page") is None
    assert scope.why_out("https://example.org/page") == "off-domain"
    assert scope.why_out("https://notexample.com/") == "off-domain"
    assert scope.why_out("ftp://example.com/file") == "scheme"
    assert scope.why_out("https://example.com/admin/users") == "excluded-pattern"
    private = parsers.Scope.of(SiteConfig.model_validate({"name": "p", "start_urls": ["http://127.0.0.1:8000/"]}))
    assert private.why_out("http://127.0.0.1:8000/") == "private-address"


@pytest.mark.parametrize("host, private", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("169.254.169.254", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", True), ("93.184.216.34", False), ("example.com", False),
])
def test_is_private_host(host, private):
    assert parsers.is_private_host(host) is private


def test_agent_token():
    assert parsers.agent_token("sitekb-test/1.0 (+http://x)") == "sitekb-test"
    assert parsers.agent_token("MyBot (+http://x)") == "mybot"


# -- page facts and opt-outs -------------------------------------------------------------

def test_robots_directives_respect_user_agent_scopes():
    assert parsers.robots_directives("noai, noindex") == {"noai", "noindex"}
    assert parsers.robots_directives("googlebot: noindex, nofollow") == set()
    assert parsers.robots_directives("googlebot: noindex, sitekb: noai", agent="sitekb") == {"noai"}
    assert parsers.robots_directives("max-snippet:0, noarchive") == {"noarchive"}
    assert parsers.robots_directives("unavailable_after: 2030-01-01, noai") == {"noai"}
    assert parsers.robots_directives(None) == set()


def test_read_page_collects_everything_in_one_parse():
    body = """<html><head>
      <meta name="ROBOTS" content="nofollow"><meta name="sitekb-test" content="noai">
      <meta name="googlebot" content="noindex"><meta name="tdm-reservation" content="1">
      <meta name="tdm-policy" content="https://example.com/policy.json">
      <link rel="alternate canonical" href="/original">
    </head><body>
      <a href="/a">a</a><a href="b?x=1#f">b</a><a rel="nofollow" href="/c">c</a>
      <a href="mailto:x@example.com">m</a><a href="javascript:void(0)">j</a><a href="#top">t</a>
      <a href="http://[bad/">bad</a>
    </body></html>"""
    facts = parsers.read_page(body, "https://example.com/dir/page", agent="sitekb-test")
    assert facts.parsed and not facts.malformed
    assert facts.canonical == "https://example.com/original"
    assert facts.robots == {"nofollow", "noai"}           # googlebot's rule is not ours
    assert facts.tdm_reservation == "1" and facts.tdm_policy == "https://example.com/policy.json"
    assert facts.links == ["https://example.com/a", "https://example.com/dir/b?x=1#f"]


def test_read_page_flags_broken_markup_and_survives_garbage():
    assert parsers.read_page("<div><p>open <b>bold</div></span>", "https://e.com/").malformed
    assert not parsers.read_page("   ", "https://e.com/").parsed
    assert parsers.read_page("<<<<>>>> just text", "https://e.com/").parsed


@pytest.mark.parametrize("body, headers, rule", [
    ('<meta name="robots" content="noai">', {}, "robots-meta"),
    ('<meta name="robots" content="none">', {}, "robots-meta"),
    ('<meta name="robots" content="noarchive">', {}, None),
    ("<p>ok</p>", {"x-robots-tag": "noindex"}, "x-robots-tag"),
    ("<p>ok</p>", {"x-robots-tag": "otherbot: noindex"}, None),
    ("<p>ok</p>", {"tdm-reservation": "1"}, "tdm-reservation"),
    ('<meta name="tdm-reservation" content="1">', {}, "tdm-reservation"),
    ('<meta name="tdm-reservation" content="0">', {}, None),
    ("<p>Private notes #do_NOT_train_on_this</p>", {}, "label"),
    ('<meta name="keywords" content="a, #DO_not_TRAIN_on_this">', {}, "label"),
])
def test_opt_out_signals(body, headers, rule):
    html = f"<html><head>{body}</head><body><p>text</p></body></html>"
    facts = parsers.read_page(html, "https://example.com/")
    signal = parsers.opt_out(html, headers, site(), facts)
    assert (signal.rule if signal else None) == rule


def test_opt_in_mode():
    config = site(opt_in_only=True)
    assert parsers.opt_out("<p>#train_on_this</p>", {}, config, parsers.read_page("<p>x</p>", "https://e/")) is None
    assert parsers.opt_out("<p>nothing</p>", {}, config).rule == "opt-in-missing"
    assert parsers.opt_out("<p>#train_on_this #do_NOT_train_on_this</p>", {}, config).rule == "label"


def test_header_opt_out_alone_for_304s():
    assert parsers.header_opt_out({"x-robots-tag": "noai"}, site()).rule == "x-robots-tag"
    assert parsers.header_opt_out({"etag": '"x"'}, site()) is None


# -- bodies ---------------------------------------------------------------------------------

def test_decode_html_handles_wrong_and_missing_charsets():
    assert parsers.decode_html("café".encode("utf-8"), "text/html; charset=utf-8") == ("café", None)
    assert parsers.decode_html("café".encode("latin-1"), "text/html; charset=utf-8") == ("café", "charset_mismatch")
    assert parsers.decode_html("café".encode("utf-8"), "text/html") == ("café", "charset_missing")
    assert parsers.decode_html("café".encode("cp1252"), None) == ("café", "charset_missing")
    meta = '<meta charset="iso-8859-1"><p>café</p>'.encode("latin-1")
    assert parsers.decode_html(meta, "text/html")[1] is None
    assert parsers.decode_html(b"\xef\xbb\xbfhello", "text/html; charset=latin-1") == ("hello", None)  # BOM wins
    assert parsers.decode_html(b"x", "text/html; charset=no-such-codec")[1] == "charset_missing"


def test_looks_binary_and_media_type():
    assert parsers.looks_binary(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert parsers.looks_binary(bytes(range(32)) * 4)
    assert not parsers.looks_binary("<html>caf\u00e9</html>".encode())
    assert not parsers.looks_binary(b"")
    assert parsers.media_type("Text/HTML; charset=UTF-8") == "text/html"
    assert parsers.media_type(None) == ""


# -- TDMRep, dates, Retry-After, robots.txt --------------------------------------------------

def test_tdmrep_rules_first_match_wins():
    rules = parsers.parse_tdmrep(b"""[
        {"location": "/public/*.pdf$", "tdm-reservation": 0},
        {"location": "/public/", "tdm-reservation": 1, "tdm-policy": "https://e.com/p.json"},
        {"location": "/*", "tdm-reservation": 0}
    ]""")
    assert parsers.tdm_rule_for(rules, "https://e.com/public/a.pdf").reserved is False
    assert parsers.tdm_rule_for(rules, "https://e.com/public/a.pdf?x=1").reserved is True   # $ anchors
    reserved = parsers.tdm_rule_for(rules, "https://e.com/public/page.html")
    assert reserved.reserved and reserved.policy == "https://e.com/p.json"
    assert parsers.tdm_rule_for(rules, "https://e.com/blog/").reserved is False
    assert parsers.tdm_rule_for([], "https://e.com/") is None


@pytest.mark.parametrize("text", [b"not json", b'{"no": "location"}', b"42", b'[{"location": 3}]',
                                  b"[" * 10_000 + b"]" * 10_000])   # nested too deep: not a RecursionError
def test_tdmrep_broken_files_raise_value_error(text):
    with pytest.raises(ValueError):
        parsers.parse_tdmrep(text)


def test_lastmod_is_read_conservatively():
    fetched = datetime(2024, 5, 2, 9, 0, tzinfo=timezone.utc)
    assert parsers.unchanged_since("2024-05-01T10:00:00+00:00", fetched)
    assert not parsers.unchanged_since("2024-05-02T10:00:00Z", fetched)
    # A bare date may mean any time that day in any zone: same day is "maybe changed".
    assert not parsers.unchanged_since("2024-05-02", fetched)
    assert not parsers.unchanged_since("2024-05-01", fetched)           # could still be 1 May in UTC-12
    assert parsers.unchanged_since("2024-04-30", fetched)
    assert parsers.unchanged_since("2023", fetched) and not parsers.unchanged_since("2024-05", fetched)
    assert not parsers.unchanged_since("yesterday", fetched)
    assert not parsers.unchanged_since("2024-04-30", None)
    assert parsers.parse_lastmod("2024-02-30") is None


def test_retry_after_seconds():
    now = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert parsers.retry_after_seconds(b"120") == 120
    assert parsers.retry_after_seconds("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30
    assert parsers.retry_after_seconds("Mon, 01 Jan 2024 11:00:00 GMT", now) == 0
    assert parsers.retry_after_seconds("soon") is None
    assert parsers.retry_after_seconds(None) is None


def test_robots_looks_broken():
    assert not parsers.robots_looks_broken(b"User-agent: *\nDisallow: /x\n")
    assert not parsers.robots_looks_broken(b"")
    assert parsers.robots_looks_broken(b"<html><body>Welcome!</body></html>")
    assert parsers.robots_looks_broken(bytes(range(256)))


# -- the frontier ------------------------------------------------------------------------------

def test_frontier_limits_and_traps():
    frontier = Frontier(max_pages=7, max_depth=2, max_query_variants=2, max_url_length=60, max_segment_repeats=2)
    assert frontier.admit("https://e.com/", 0) is None
    assert frontier.admit("https://e.com/", 1) == SEEN
    assert frontier.admit("https://e.com/deep", 3) == "max-depth"
    assert frontier.admit("https://e.com/deep", 4) == SEEN                # each refusal reported once
    assert frontier.too_deep == {"https://e.com/deep"}
    # Reached again at an allowed depth (the sitemap, a shorter path): admitted after all.
    assert frontier.admit("https://e.com/deep", 1) is None
    assert frontier.too_deep == set() and frontier.depth_of("https://e.com/deep") == 1
    assert frontier.admit("https://e.com/" + "x" * 60, 1) == "url-too-long"
    assert frontier.admit("https://e.com/a/b/a/b/a/", 1) == "repeated-segments"
    assert frontier.admit("https://e.com/a/b/a/b/", 1) is None
    assert frontier.admit("https://e.com/cal?m=1", 1) is None
    assert frontier.admit("https://e.com/cal?m=2", 1) is None
    assert frontier.admit("https://e.com/cal?m=3", 1) == "query-variants"
    assert frontier.admit("https://e.com/other?m=3", 1) is None           # the cap is per path
    assert frontier.admit("https://e.com/six", 1) is None
    assert frontier.admit("https://e.com/seven", 1) == "max-pages"
    assert frontier.admit("https://e.com/seven", 0) == SEEN              # only a depth refusal is taken back
    assert len(frontier.scheduled) == 7
    assert frontier.refuse("https://e.com/reserved", "tdm-reservation") is True
    assert frontier.refuse("https://e.com/reserved", "tdm-reservation") is False
    assert frontier.admit("https://e.com/reserved", 0) == SEEN


def test_frontier_a_closer_path_follows_the_links_again():
    frontier = Frontier(max_pages=100, max_depth=2)
    assert frontier.admit("https://e.com/list/2", 2) is None
    assert frontier.expand("https://e.com/list/2", ["https://e.com/item", "https://e.com/list/3"]) == 3
    assert frontier.admit("https://e.com/item", 3) == "max-depth"
    assert frontier.admit("https://e.com/list/2", 2) == SEEN
    # The sitemap names the list page: depth 0, and its links are followed again one deeper.
    assert frontier.admit("https://e.com/list/2", 0) == CLOSER
    assert frontier.follow_again("https://e.com/list/2") == [("https://e.com/item", 1), ("https://e.com/list/3", 1)]
    assert frontier.admit("https://e.com/item", 1) is None and frontier.too_deep == set()
    assert frontier.follow_again("https://e.com/list/2") == []            # depth 0: nothing shorter to come
    # A canonical URL is the same page: followed at the same depth.
    assert frontier.admit("https://e.com/alias", 2) is None
    assert frontier.expand("https://e.com/alias", ["https://e.com/real"], step=0) == 2
    assert frontier.admit("https://e.com/alias", 1) == CLOSER
    assert frontier.follow_again("https://e.com/alias") == [("https://e.com/real", 1)]
    assert frontier.expand("https://e.com/unknown", ["https://e.com/x"]) is None


# -- PDF ------------------------------------------------------------------------------------------

def test_pdf_text_and_its_document():
    data = minimal_pdf("Pricing guide", ["Three tiers: starter, growth and enterprise.", "Call (sales) today."])
    text = pdf_text(data)
    assert text.title == "Pricing guide" and text.pages == 1
    assert "Three tiers: starter, growth and enterprise." in text.text and "Call (sales) today." in text.text
    document = text_document(text.as_markdown(), "https://e.com/guide.pdf")
    assert document.title == "Pricing guide" and document.markdown.startswith("# Pricing guide")
    assert document.word_count == 11 and document.visible_words == 11 and len(document.content_hash) == 64
    assert text_document("  \n ", "https://e.com/empty.pdf") is None
    assert is_text_page("application/pdf") and is_text_page("application/PDF; x=1") and not is_text_page("text/html")


def test_unreadable_pdfs_raise():
    with pytest.raises(PdfUnreadable):
        pdf_text(b"%PDF-1.4 garbage")
    with pytest.raises(PdfUnreadable):
        pdf_text(b"")


def test_lastmod_skip_compares_with_real_fetch_time():
    fetched = datetime.now(timezone.utc) - timedelta(days=3)
    assert parsers.unchanged_since((fetched - timedelta(days=2)).date().isoformat(), fetched)


# -- scope: origins and ports --------------------------------------------------------

def test_scope_refuses_another_port_of_the_site_host():
    scope = parsers.Scope.of(site())
    assert scope.why_out("https://example.com:443/page") is None
    assert scope.why_out("http://example.com/page") is None           # default port of the other scheme
    assert scope.why_out("https://example.com:2375/containers/json") == "off-port"   # Docker API
    assert scope.why_out("http://example.com:6379/") == "off-port"    # Redis
    assert scope.why_out("https://blog.example.com:8443/") == "off-port"
    assert scope.why_out("https://example.com:99999/") == "off-domain"   # not a port at all


def test_scope_admits_the_start_urls_own_port_only():
    config = SiteConfig.model_validate({"name": "p", "start_urls": ["http://127.0.0.1:8000/"],
                                        "crawl": {"allow_private_addresses": True}})
    scope = parsers.Scope.of(config)
    assert scope.why_out("http://127.0.0.1:8000/docs") is None
    assert scope.why_out("http://127.0.0.1:8001/") == "off-port"
    assert scope.why_out("https://127.0.0.1:8000/") == "off-port"     # the origin is scheme, host and port


def test_scope_admits_origins_listed_in_allowed_domains():
    config = SiteConfig.model_validate({"name": "p", "start_urls": ["https://example.com/"],
                                        "crawl": {"allowed_domains": ["example.com", "https://docs.example.com:8443"]}})
    scope = parsers.Scope.of(config)
    assert scope.why_out("https://docs.example.com:8443/guide") is None
    assert scope.why_out("http://docs.example.com:8443/guide") == "off-port"
    assert scope.why_out("https://example.com:8443/") == "off-port"
