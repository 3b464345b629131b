"""Fixtures of the crawler tests: a programmable site on 127.0.0.1 and crawl helpers.

Every crawl is the real thing: ``sitekb.stages.crawl.crawl_site`` spawns the Scrapy
process, which writes into the real database of the ``database_url`` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sitekb.sites import SiteConfig
from tests.crawl.fixture_site import FixtureSite

AGENT = "sitekb-test"


def site_config(base_url: str, *, opt_out: dict | None = None, **crawl) -> SiteConfig:
    """A test site config: loopback allowed, no politeness delay, short timeouts, fast retries."""
    settings = {
        "allow_private_addresses": True,
        "download_delay": 0,
        "timeout_seconds": 3,
        "retries": 1,
        "retry_backoff": 0.05,
        "concurrency_per_host": 8,
        "user_agent": f"{AGENT}/1.0",
        "contact_url": "http://127.0.0.1/bot-contact",
        **crawl,
    }
    return SiteConfig.model_validate({
        "name": "fixture",
        "start_urls": [base_url + "/"],
        "crawl": settings,
        "opt_out": opt_out or {},
    })


@dataclass
class CrawlResult:
    stats: dict
    pages: dict[str, dict]          # url path -> row of sitekb.pages
    exclusions: dict[str, set[str]]  # url path -> rules recorded in this run


def read_back(conn, base_url: str, run_id: str) -> tuple[dict, dict]:
    pages = {}
    for row in conn.execute(
        """SELECT url, status, body, content_type, excluded_rule, last_run_id, etag, links, fetched_at, content_hash
           FROM sitekb.pages WHERE site = 'fixture'"""
    ):
        keys = ("url", "status", "body", "content_type", "excluded_rule", "last_run_id", "etag", "links",
                "fetched_at", "content_hash")
        record = dict(zip(keys, row))
        pages[record["url"].removeprefix(base_url)] = record
    exclusions: dict[str, set[str]] = {}
    for url, rule in conn.execute("SELECT url, rule FROM sitekb.exclusions WHERE run_id = %s", (run_id,)):
        exclusions.setdefault(url.removeprefix(base_url), set()).add(rule)
    return pages, exclusions


@pytest.fixture
def web():
    with FixtureSite() as site:
        yield site


@pytest.fixture
def crawl(database_url, conn):
    """crawl(config, run_id, full=False) -> CrawlResult, through the real crawler process."""
    from sitekb.stages.crawl import crawl_site

    def run(config: SiteConfig, run_id: str, full: bool = False) -> CrawlResult:
        stats = crawl_site(conn, config, run_id, database_url, full=full)
        pages, exclusions = read_back(conn, config.base_url, run_id)
        return CrawlResult(stats, pages, exclusions)

    return run
