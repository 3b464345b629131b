"""Scrapy components of the crawler on hand-built requests and responses.

The spider's routing, the retry and scope middlewares, the unchanged-page
shortcut and the duplicate filter run on real Scrapy objects built with
``scrapy.utils.test.get_crawler``; no download happens. The item pipeline
writes to the real database.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from time import monotonic
from types import SimpleNamespace

import pytest
from scrapy import Request
from scrapy.core.downloader import Slot
from scrapy.exceptions import DownloadTimeoutError, IgnoreRequest, StopDownload
from scrapy.http import Headers, HtmlResponse, Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.test import get_crawler
from twisted.python.failure import Failure

from sitekb.sites import SiteConfig
from sitekb_crawlers.items import ExclusionItem, PageItem
from sitekb_crawlers.middlewares import (
    OutOfScope,
    PoliteRetryMiddleware,
    RedirectAwareDupeFilter,
    ScopeGuardMiddleware,
    SitemapUnchangedMiddleware,
    pause_host,
)
from sitekb_crawlers.parsers import TdmRule
from sitekb_crawlers.pipelines import PostgresPipeline
from sitekb_crawlers.settings import crawl_settings
from sitekb_crawlers.spiders.site import SiteSpider
from tests.crawl.fixture_site import minimal_pdf

BASE = "https://example.com"
PARAGRAPH = "<p>" + "Words about marketing operations. " * 10 + "</p>"


def config(**crawl) -> SiteConfig:
    return SiteConfig.model_validate({
        "name": "unit", "start_urls": [BASE + "/"],
        "crawl": {"user_agent": "unitbot/1.0 (+https://example.com/bot)", "exclude_patterns": ["/admin/"], **crawl},
    })


def make_spider(known: dict | None = None, full: bool = False, **crawl) -> SiteSpider:
    site = config(**crawl)
    crawler = get_crawler(SiteSpider, crawl_settings(site, run_id="r1", database_url="unused", full=full))
    return SiteSpider.from_crawler(crawler, site=site, known=known or {})


def html(url: str, body: str, depth: int = 0, headers: dict | None = None, status: int = 200) -> HtmlResponse:
    request = Request(url, meta={"sitekb_url": url, "sitekb_depth": depth})
    return HtmlResponse(url, status=status, body=body.encode(), request=request,
                        headers={"Content-Type": "text/html; charset=utf-8", **(headers or {})})


def split(outputs) -> tuple[list[PageItem], list[ExclusionItem], list[Request]]:
    outputs = list(outputs)
    return ([o for o in outputs if isinstance(o, PageItem)], [o for o in outputs if isinstance(o, ExclusionItem)],
            [o for o in outputs if isinstance(o, Request)])


def stats(spider) -> dict:
    return {k.removeprefix("sitekb/"): v for k, v in spider.crawler.stats.get_stats().items()}


# -- the spider -------------------------------------------------------------------------------

def test_a_normal_page_is_stored_and_its_links_followed():
    spider = make_spider()
    body = (f"<html><head><title>T</title></head><body>{PARAGRAPH}<a href='/next?utm_source=x'>n</a>"
            "<a href='https://other.org/'>o</a><a href='/admin/x'>a</a><a href='/next'>again</a></body></html>")
    pages, exclusions, requests = split(spider.parse_page(html(BASE + "/start", body, depth=1)))
    assert len(pages) == 1 and pages[0].body.startswith("<html>") and pages[0].excluded_rule is None
    assert pages[0].links == [BASE + "/next", BASE + "/admin/x"]   # normalised, off-domain dropped
    assert [r.url for r in requests] == [BASE + "/next"]
    assert requests[0].meta["sitekb_depth"] == 2 and requests[0].priority == -2
    assert [(e.url, e.rule) for e in exclusions] == [(BASE + "/admin/x", "excluded-pattern")]
    assert stats(spider)["fetched"] == 1


def test_an_opted_out_page_keeps_nothing_and_is_purged():
    spider = make_spider()
    body = f"<html><head><meta name='robots' content='noai'></head><body>{PARAGRAPH}<a href='/x'>x</a></body></html>"
    pages, exclusions, requests = split(spider.parse_page(html(BASE + "/p", body)))
    assert pages[0].excluded_rule == "robots-meta" and pages[0].body is None
    assert exclusions == [ExclusionItem(BASE + "/p", "robots-meta", "noai", purge=True)]
    assert requests == []


def test_canonical_elsewhere_excludes_and_schedules_the_canonical():
    spider = make_spider()
    body = f"<html><head><link rel='canonical' href='/original'></head><body>{PARAGRAPH}</body></html>"
    pages, exclusions, requests = split(spider.parse_page(html(BASE + "/copy", body)))
    assert pages[0].excluded_rule == "canonical" and exclusions[0].purge is False
    assert [r.url for r in requests] == [BASE + "/original"]


def test_nofollow_page_is_stored_without_following_links():
    spider = make_spider()
    body = f"<html><body>{PARAGRAPH}<a href='/x'>x</a></body></html>"
    pages, _, requests = split(spider.parse_page(html(BASE + "/nf", body, headers={"X-Robots-Tag": "nofollow"})))
    assert pages[0].body and pages[0].links == [] and requests == []


def test_nosnippet_sections_are_cut_before_storage():
    spider = make_spider()
    body = f"<html><body>{PARAGRAPH}<div data-nosnippet>SECRET</div></body></html>"
    pages, _, _ = split(spider.parse_page(html(BASE + "/s", body)))
    assert "SECRET" not in pages[0].body and "marketing operations" in pages[0].body


def test_conditional_requests_and_the_sitemap_shortcut():
    fetched_at = datetime.now(timezone.utc) - timedelta(days=1)
    known = {BASE + "/a": {"etag": '"v1"', "last_modified": "Tue, 01 Jan 2030 00:00:00 GMT",
                           "links": [BASE + "/b"], "fetched_at": fetched_at}}
    lastmod = (fetched_at - timedelta(days=5)).date().isoformat()
    default = make_spider(known=known)          # every page is asked again: opt-outs are re-checked
    default.lastmods[BASE + "/a"] = lastmod
    (request,) = default.schedule(BASE + "/a", depth=0)
    assert request.headers[b"If-None-Match"] == b'"v1"' and "sitekb_unchanged" not in request.meta
    spider = make_spider(known=known, use_sitemap_lastmod=True)
    spider.lastmods[BASE + "/a"] = lastmod
    (request,) = spider.schedule(BASE + "/a", depth=0)
    assert request.headers[b"If-None-Match"] == b'"v1"' and request.headers[b"If-Modified-Since"]
    assert request.meta["sitekb_unchanged"] is True
    full = make_spider(known=known, full=True)
    full.lastmods[BASE + "/a"] = spider.lastmods[BASE + "/a"]
    (request,) = full.schedule(BASE + "/a", depth=0)
    assert b"If-None-Match" not in request.headers and "sitekb_unchanged" not in request.meta


def test_a_304_reuses_the_stored_page_and_follows_stored_links():
    known = {BASE + "/a": {"links": [BASE + "/b"], "etag": '"v1"'}}
    spider = make_spider(known=known)
    request = Request(BASE + "/a", meta={"sitekb_url": BASE + "/a", "sitekb_depth": 1})
    pages, _, requests = split(spider.parse_page(Response(BASE + "/a", status=304, request=request)))
    assert pages[0].not_modified and not pages[0].unchanged_by_sitemap and pages[0].body is None
    assert [r.url for r in requests] == [BASE + "/b"]
    synthetic = SitemapUnchangedMiddleware().process_request(
        Request(BASE + "/a", meta={"sitekb_unchanged": True, "sitekb_url": BASE + "/a"}))
    assert synthetic.status == 304
    pages, _, _ = split(make_spider(known=known).parse_page(synthetic))
    assert pages[0].unchanged_by_sitemap
    assert SitemapUnchangedMiddleware().process_request(Request(BASE + "/a")) is None


def test_a_304_with_a_new_opt_out_header_is_excluded():
    spider = make_spider(known={BASE + "/a": {"links": [BASE + "/b"]}})
    request = Request(BASE + "/a", meta={"sitekb_url": BASE + "/a"})
    response = Response(BASE + "/a", status=304, request=request, headers={"X-Robots-Tag": "noai"})
    pages, exclusions, requests = split(spider.parse_page(response))
    assert pages[0].excluded_rule == "x-robots-tag" and exclusions[0].purge and requests == []


def test_content_types_pdf_and_binary_bodies():
    spider = make_spider()
    request = Request(BASE + "/img", meta={"sitekb_url": BASE + "/img"})
    image = Response(BASE + "/img", body=b"\x89PNG", headers={"Content-Type": "image/png"}, request=request)
    pages, exclusions, _ = split(spider.parse_page(image))
    assert exclusions[0].rule == "content-type" and pages[0].body is None
    with pytest.raises(StopDownload):
        spider.on_headers(Headers({"Content-Type": "image/png"}), 2_000_000, request)
    with pytest.raises(StopDownload):
        spider.on_headers(Headers({"Content-Type": "image/png"}), -1, request)   # unknown length
    assert spider.on_headers(Headers({"Content-Type": "image/png"}), 10_000, request) is None  # small: read
    assert spider.on_headers(Headers({"Content-Type": "text/html"}), 2_000_000, request) is None

    pdf_request = Request(BASE + "/doc.pdf", meta={"sitekb_url": BASE + "/doc.pdf"})
    pdf = Response(BASE + "/doc.pdf", body=minimal_pdf("Guide", ["Pricing has three tiers."]),
                   headers={"Content-Type": "application/pdf"}, request=pdf_request)
    pages, _, _ = split(spider.parse_page(pdf))
    assert pages[0].content_type == "application/pdf" and pages[0].body == "# Guide\n\nPricing has three tiers."

    binary = html(BASE + "/bin", "")
    binary = binary.replace(body=bytes(range(256)))
    pages, exclusions, _ = split(spider.parse_page(binary))
    assert exclusions[0].rule == "not-text" and stats(spider)["bad_input/binary_body"] == 1


def test_tdmrep_reserved_urls_are_never_requested():
    spider = make_spider()
    spider.tdm_rules[BASE] = [TdmRule("/reports/*", True, "https://example.com/policy")]
    (exclusion,) = spider.schedule(BASE + "/reports/q1.html", depth=1)
    assert isinstance(exclusion, ExclusionItem) and exclusion.rule == "tdm-reservation" and exclusion.purge
    assert list(spider.schedule(BASE + "/reports/q1.html", depth=1)) == []     # reported once
    assert isinstance(next(iter(spider.schedule(BASE + "/blog/", depth=1))), Request)


def test_failures_are_recorded_by_kind():
    spider = make_spider()
    request = Request(BASE + "/x", meta={"sitekb_url": BASE + "/x", "sitekb_depth": 2})

    def fail(exc):
        failure = Failure(exc)
        failure.request = request
        return split(spider.page_failed(failure))

    pages, _, _ = fail(HttpError(Response(BASE + "/x", status=410, request=request)))
    assert pages == [PageItem(url=BASE + "/x", status=410, depth=2)]
    _, exclusions, _ = fail(IgnoreRequest("Forbidden by robots.txt"))
    assert exclusions[0].rule == "robots-txt" and exclusions[0].purge
    _, exclusions, _ = fail(OutOfScope("off-domain", "https://elsewhere.org/"))
    assert exclusions[0].rule == "off-domain"
    assert fail(DownloadTimeoutError("took too long")) == ([], [], [])
    assert fail(IgnoreRequest("max redirections reached")) == ([], [], [])
    counted = stats(spider)
    assert counted["errors/http_410"] == 1 and counted["errors/timeout"] == 1
    assert counted["errors/redirect_limit"] == 1 and counted["excluded/robots-txt"] == 1


# -- middlewares ----------------------------------------------------------------------------------

def retry_middleware(**crawl) -> PoliteRetryMiddleware:
    crawler = get_crawler(SiteSpider, crawl_settings(config(**crawl), run_id="r", database_url="unused"))
    return PoliteRetryMiddleware.from_crawler(crawler)


def test_retry_after_is_honoured_and_permanent_errors_are_not_retried():
    middleware = retry_middleware(retries=2, retry_backoff=0.5, max_retry_after=60)
    request = Request(BASE + "/busy")
    busy = Response(BASE + "/busy", status=429, headers={"Retry-After": "3"}, request=request)
    retry = middleware.process_response(request, busy)
    assert isinstance(retry, Request) and retry.meta["retry_times"] == 1 and retry.meta["sitekb_retry_wait"] == 3
    assert retry.dont_filter
    for status in (404, 403, 410, 400):
        response = Response(BASE + "/busy", status=status, request=request)
        assert middleware.process_response(request, response) is response
    too_long = Response(BASE + "/busy", status=503, headers={"Retry-After": "3600"}, request=request)
    assert middleware.process_response(request, too_long) is too_long
    assert middleware.crawler.stats.get_value("sitekb/retry_after_too_long") == 1


def test_backoff_doubles_and_retries_run_out():
    middleware = retry_middleware(retries=2, retry_backoff=0.5)
    request = Request(BASE + "/flaky")
    first = middleware.process_exception(request, DownloadTimeoutError("slow"))
    second = middleware.process_response(first, Response(BASE + "/flaky", status=500, request=first))
    assert first.meta["sitekb_retry_wait"] == 0.5 and second.meta["sitekb_retry_wait"] == 1.0
    final = Response(BASE + "/flaky", status=502, request=second)
    assert middleware.process_response(second, final) is final          # RETRY_TIMES=2 reached
    assert middleware.process_exception(request, ValueError("not transient")) is None
    no_retry = Request(BASE + "/x", meta={"dont_retry": True})
    assert middleware.process_exception(no_retry, DownloadTimeoutError("slow")) is None


def test_pause_host_holds_the_whole_slot():
    slot = Slot(concurrency=4, delay=0, jitter=0)
    downloader = SimpleNamespace(slots={"example.com": slot}, get_slot_key=lambda request: "example.com")
    crawler = SimpleNamespace(engine=SimpleNamespace(downloader=downloader))
    assert pause_host(crawler, Request(BASE + "/x"), 5)
    # Scrapy waits delay - (now - lastseen) before the next request of the slot.
    assert slot.delay > 0 and slot.delay - (monotonic() - slot.lastseen) > 4.9
    assert not pause_host(SimpleNamespace(), Request(BASE + "/x"), 5)   # no engine: nothing to pause


def test_scope_guard_refuses_before_sending():
    guard = ScopeGuardMiddleware.from_crawler(get_crawler(SiteSpider, crawl_settings(config(), run_id="r",
                                                                                      database_url="unused")))
    assert guard.process_request(Request(BASE + "/ok")) is None
    for url, rule in (("https://evil.org/", "off-domain"), (BASE + "/admin/", "excluded-pattern")):
        with pytest.raises(OutOfScope) as caught:
            guard.process_request(Request(url))
        assert caught.value.rule == rule


def test_dupe_filter_counts_redirect_loops():
    crawler = get_crawler(SiteSpider, crawl_settings(config(), run_id="r", database_url="unused"))
    dupes = RedirectAwareDupeFilter.from_crawler(crawler)
    assert not dupes.request_seen(Request(BASE + "/a"))
    looped = Request(BASE + "/a", meta={"redirect_urls": [BASE + "/a", BASE + "/b"]})
    assert dupes.request_seen(looped)
    assert not dupes.request_seen(Request(BASE + "/c"))
    assert dupes.request_seen(Request(BASE + "/c", meta={"redirect_urls": [BASE + "/old-c"]}))
    assert crawler.stats.get_value("sitekb/errors/redirect_loop") == 1
    assert crawler.stats.get_value("sitekb/redirected_to_known") == 1


# -- the pipeline, against the real database --------------------------------------------------------

def test_pipeline_writes_touches_and_purges(conn, database_url):
    pipeline = PostgresPipeline(database_url, "unit", "run-1", batch_size=100)
    pipeline.open_spider()
    try:
        pipeline._write([
            PageItem(url=BASE + "/a", status=200, body="<p>A</p>", etag='"1"', links=[BASE + "/b"]),
            PageItem(url=BASE + "/b", status=200, body="<p>B</p>"),
            PageItem(url=BASE + "/c", status=200, body="<p>C</p>"),
        ])
        before = dict(conn.execute("SELECT url, fetched_at FROM sitekb.pages").fetchall())
        conn.execute("""INSERT INTO sitekb.documents (run_id, site, url, content_hash, markdown, word_count)
                        VALUES ('run-1', 'unit', %s, 'h', 'C text', 2)""", (BASE + "/c",))
        pipeline.run_id = "run-2"
        pipeline._write([
            PageItem(url=BASE + "/a", status=304, not_modified=True),
            PageItem(url=BASE + "/b", status=304, not_modified=True, unchanged_by_sitemap=True),
            ExclusionItem(url=BASE + "/c", rule="robots-txt", detail="Forbidden by robots.txt", purge=True),
            ExclusionItem(url=BASE + "/d", rule="max-pages", detail="limit"),
        ])
    finally:
        pipeline.conn.close()  # close_spider() defers to a reactor thread; none runs here
    rows = {url: (run, body, rule, fetched) for url, run, body, rule, fetched in conn.execute(
        "SELECT url, last_run_id, body, excluded_rule, fetched_at FROM sitekb.pages")}
    assert rows[BASE + "/a"][0] == "run-2" and rows[BASE + "/a"][3] > before[BASE + "/a"]   # 304: fetched again
    assert rows[BASE + "/b"][0] == "run-2" and rows[BASE + "/b"][3] == before[BASE + "/b"]  # lastmod: not fetched
    assert rows[BASE + "/c"][1] is None and rows[BASE + "/c"][2] == "robots-txt"
    assert conn.execute("SELECT count(*) FROM sitekb.documents").fetchone()[0] == 0
    ledger = set(conn.execute("SELECT url, rule, run_id FROM sitekb.exclusions").fetchall())
    assert ledger == {(BASE + "/c", "robots-txt", "run-2"), (BASE + "/d", "max-pages", "run-2")}


def test_text_responses_are_decoded_by_the_spider_not_scrapy():
    # A page whose header lies about the charset: the spider decodes the bytes itself.
    spider = make_spider()
    body = f"<html><body>{PARAGRAPH}<p>Caf\u00e9</p></body></html>".encode("latin-1")
    request = Request(BASE + "/l", meta={"sitekb_url": BASE + "/l"})
    response = TextResponse(BASE + "/l", body=body, headers={"Content-Type": "text/html; charset=utf-8"},
                            request=request)
    pages, _, _ = split(spider.parse_page(response))
    assert "Caf\u00e9" in pages[0].body and stats(spider)["bad_input/charset_mismatch"] == 1


def test_the_crawler_process_dies_with_its_parent(tmp_path):
    """A killed `sitekb run` (or Airflow task) takes its crawler with it: no crawler writes as a dead run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from sitekb.stages.crawl import die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], preexec_fn=die_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n")])
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the parent never started its child"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, f"the child {child} outlived its killed parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_crawl_stage_starts_its_crawler_so_that_it_dies_with_it(monkeypatch):
    """The wiring of the test above: the crawl stage's subprocess is started with die_with_parent."""
    import subprocess

    from sitekb.sites import site_from_dict
    from sitekb.stages import crawl as crawl_stage

    seen = {}

    def fake_run(command, **kwargs):
        seen.update(kwargs)
        return subprocess.CompletedProcess(command, 1, "", "stopped by the test")

    monkeypatch.setattr(crawl_stage, "check_reachable", lambda site: None)
    monkeypatch.setattr(crawl_stage.subprocess, "run", fake_run)
    site = site_from_dict({"name": "w", "start_urls": ["https://w.example/"],
                           "crawl": {"contact_url": "https://ops.example/bot"}})
    with pytest.raises(crawl_stage.CrawlFailed, match="stopped by the test"):
        crawl_stage.crawl(site, "w-run", "postgresql://x@127.0.0.1:1/x")
    assert seen["preexec_fn"] is crawl_stage.die_with_parent
