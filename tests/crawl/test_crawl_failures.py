"""Failed fetches count: a site that goes down mid-crawl, a hub page that fails, relative Sitemap lines.

Real crawls through the crawl stage (``crawl_site``) into the real database;
the batch gate is the one the evaluate stage calls, over ``pages.run_totals``.
The failure kinds are also checked on exception chains built by hand.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from OpenSSL.SSL import Error as OpenSSLError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
)
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived

from sitekb.quality import gate
from sitekb.store import ledger, pages
from sitekb_crawlers.failures import kind_of
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import html_reply, page, raw, sitemap


def failed_urls(conn, base_url: str, run_id: str) -> dict[str, str]:
    return {row["url"].removeprefix(base_url): row["kind"] for row in ledger.fetch_failures(conn, run_id)}


def test_a_site_that_goes_down_mid_crawl_counts_every_failed_fetch_and_trips_the_gate(web, crawl, conn):
    links = [f"/p/{i}.html" for i in range(30)]
    web.add("/", html_reply(page("Home", links=links)))
    web.add_prefix("/p/", lambda r: html_reply(page(f"Page {r.path}"))(r))
    web.go_down_after(10, prefix="/p/")
    config = site_config(web.base_url)

    result = crawl(config, "down-1")

    fetched = {url for url, row in result.pages.items() if row["body"] is not None}
    assert len(fetched & set(links)) == 10 and "/" in fetched
    unreached = set(links) - fetched
    failed = failed_urls(conn, web.base_url, "down-1")
    assert set(failed) == unreached and len(unreached) == 20
    assert set(failed.values()) <= {"connection_refused", "connection_lost"}
    assert "connection_refused" in failed.values()          # the port is closed: new connections are refused
    assert not (unreached & set(result.pages))                # no page row: nothing stored is overwritten
    assert sum(result.stats["errors"].values()) == 20 and result.stats["failed_fetches"] == 20

    totals = pages.run_totals(conn, config.name, "down-1")
    assert totals["pages_ok"] == 11 and totals["failed_fetches"] == 20
    assert totals["errors"] == 20 and totals["pages_seen"] == 31
    assert sum(totals["failed_by_kind"].values()) == 20
    failures, batch = gate.judge_batch(totals, None, config, "down-1")
    assert batch["measures"]["error_rate"] == pytest.approx(20 / 31, abs=1e-4)
    (error_rate,) = [f for f in failures if f.check == "error_rate"]
    assert "65% of fetched URLs failed (limit 20%)" in error_rate.message


def test_a_failed_hub_page_keeps_its_row_and_the_pages_behind_it_are_still_crawled(web, crawl, conn):
    leaves = ["/leaf/1.html", "/leaf/2.html", "/leaf/3.html"]
    web.add("/", html_reply(page("Home", links=["/hub.html"]), validators=False))
    web.add("/hub.html", html_reply(page("Hub", links=leaves)))
    for leaf in leaves:
        web.add(leaf, html_reply(page(f"Leaf {leaf}")))
    config = site_config(web.base_url)
    crawl(config, "hub-1")

    # The hub is in maintenance (503 after the retries); its leaves are fine but linked only from it.
    web.add("/hub.html", raw(b"maintenance", "text/plain", status=503))
    web.hits.clear()
    second = crawl(config, "hub-2")
    assert second.stats["full"] is False
    assert {leaf for leaf in leaves if web.hits_of(leaf)} == set(leaves)     # tried, not silently dropped
    assert all(second.pages[leaf]["last_run_id"] == "hub-2" for leaf in leaves)
    hub = second.pages["/hub.html"]
    assert hub["status"] == 200 and hub["body"] is not None and hub["last_run_id"] == "hub-1"
    assert failed_urls(conn, web.base_url, "hub-2") == {"/hub.html": "http_503"}
    totals = pages.run_totals(conn, config.name, "hub-2")
    assert totals == {"pages_ok": 4, "errors": 1, "pages_seen": 5, "failed_fetches": 1,
                      "failed_by_kind": {"http_503": 1}}

    # A full crawl knows the same stored links: it reaches the same pages.
    third = crawl(config, "hub-3", full=True)
    assert third.stats["full"] is True
    assert all(third.pages[leaf]["last_run_id"] == "hub-3" for leaf in leaves)
    assert failed_urls(conn, web.base_url, "hub-3") == {"/hub.html": "http_503"}


@pytest.mark.parametrize("obey", [True, False])
def test_relative_sitemap_lines_in_robots_txt_are_resolved_against_the_site(web, crawl, obey):
    web.add("/robots.txt", raw(b"User-agent: *\nDisallow: /private/\nSitemap: /sitemap.xml\n"
                               b"Sitemap: maps/more.xml\n", "text/plain"))
    web.add("/sitemap.xml", sitemap(web.base_url, [("/only-in-sitemap.html", None)]))
    web.add("/maps/more.xml", sitemap(web.base_url, [("/only-in-more.html", None)]))
    web.add("/", html_reply(page("Home")))
    web.add("/only-in-sitemap.html", html_reply(page("Sitemap only")))
    web.add("/only-in-more.html", html_reply(page("More sitemap only")))

    result = crawl(site_config(web.base_url, obey_robots_txt=obey), f"relative-sitemap-{obey}")

    fetched = {url for url, row in result.pages.items() if row["body"] is not None}
    assert {"/only-in-sitemap.html", "/only-in-more.html"} <= fetched
    assert "sitemap-out-of-scope" not in result.stats["skipped"]
    assert result.stats["sitemaps"] == 2


def test_a_sitemap_that_fails_is_a_failed_fetch_not_a_quiet_loss_of_its_pages(web, crawl, conn):
    web.add("/robots.txt", raw(b"User-agent: *\nSitemap: /sitemap.xml\n", "text/plain"))
    web.add("/sitemap.xml", raw(b"busy", "text/plain", status=503))
    web.add("/", html_reply(page("Home")))
    result = crawl(site_config(web.base_url), "sitemap-down")
    assert failed_urls(conn, web.base_url, "sitemap-down") == {"/sitemap.xml": "http_503"}
    assert result.stats["failed_fetches"] == 1
    assert pages.run_totals(conn, "fixture", "sitemap-down")["failed_by_kind"] == {"http_503": 1}


def test_a_retried_crawl_that_reached_a_failed_url_does_not_count_it(conn):
    now = datetime.now(timezone.utc)
    url = "http://127.0.0.1:9/a.html"
    pages.write_crawl_batch(conn, "s", "r1", now, failures=[
        ledger.FetchFailure(url, "timeout", "took too long"),
        ledger.FetchFailure(url + "?b", "connection_refused"),
    ])
    assert pages.run_totals(conn, "s", "r1")["failed_by_kind"] == {"connection_refused": 1, "timeout": 1}
    # The task is retried with the same run id; this time the page answers.
    pages.write_crawl_batch(conn, "s", "r1", now, fetched=[pages.Fetched(
        url=url, status=200, final_url=url, content_type="text/html", etag=None, last_modified=None,
        content_hash="h", body="<html></html>", headers={}, depth=0, excluded_rule=None, links=[])])
    assert pages.run_totals(conn, "s", "r1") == {"pages_ok": 1, "errors": 1, "pages_seen": 2, "failed_fetches": 1,
                                                 "failed_by_kind": {"connection_refused": 1}}
    # Written again (a retried batch): one row per run and URL.
    pages.write_crawl_batch(conn, "s", "r1", now, failures=[ledger.FetchFailure(url + "?b", "connection_refused")])
    assert pages.run_totals(conn, "s", "r1")["failed_fetches"] == 1


def wrapped(cause: BaseException, outer=ResponseFailed) -> DownloadFailedError:
    """What Scrapy's HTTP/1.1 handler raises: its own error around Twisted's, around the reasons."""
    try:
        raise DownloadFailedError("failed") from outer([Failure(cause)])
    except DownloadFailedError as exc:
        return exc


@pytest.mark.parametrize(("exc", "kind"), [
    (DownloadConnectionRefusedError("Connection was refused by other side"), "connection_refused"),
    (CannotResolveHostError("DNS lookup failed"), "dns"),
    (DownloadTimeoutError("took longer than 3 seconds"), "timeout"),
    (wrapped(OpenSSLError([("SSL routines", "", "certificate verify failed")])), "tls"),
    (wrapped(ConnectionLost("Connection to the other side was lost"), ResponseNeverReceived), "connection_lost"),
    (ConnectionResetError(104, "Connection reset by peer"), "connection_lost"),
    (ValueError("something else"), "value_error"),
])
def test_failure_kinds_read_the_whole_exception_chain(exc, kind):
    assert kind_of(exc) == kind
