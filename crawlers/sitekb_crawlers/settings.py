"""Scrapy settings for the sitekb crawler, derived from a site config.

``crawl_settings(site, ...)`` maps the site's scope and politeness onto
Scrapy's settings as plain values: each component reads the ones it needs in
its ``from_crawler`` (``SITEKB_SCOPE``, ``SITEKB_SITE_NAME``, ``SITEKB_RUN_ID``,
...). Only the spider is handed the validated site config itself, as a spider
argument: it routes every request by it.

Replaced Scrapy components: RobotsTxtMiddleware (RFC 9309 edge cases,
Crawl-delay), RetryMiddleware (backoff, Retry-After), the duplicate filter
(counts redirect loops), the DNS resolver (refuses private answers,
see ``resolver.py``), DepthMiddleware and the offsite middlewares (the
spider's frontier and the scope guard do depth and scope, with reasons).
"""

from __future__ import annotations

from sitekb.sites import SiteConfig
from sitekb_crawlers.parsers import Scope, agent_token

BOT_NAME = "sitekb"
SPIDER_MODULES = ["sitekb_crawlers.spiders"]
ROBOTSTXT_OBEY = True
TELNETCONSOLE_ENABLED = False
COOKIES_ENABLED = False

# Transient statuses only: a 404 or 403 will not change on retry.
RETRY_HTTP_CODES = [408, 429, 500, 502, 503, 504, 522, 524]


def crawl_settings(site: SiteConfig, *, run_id: str, database_url: str, full: bool = False) -> dict:
    crawl = site.crawl

    return {
        "BOT_NAME": BOT_NAME,
        "USER_AGENT": crawl.identity,
        "ROBOTSTXT_OBEY": crawl.obey_robots_txt,
        "ROBOTSTXT_USER_AGENT": agent_token(crawl.identity),
        "CONCURRENT_REQUESTS": max(8, crawl.concurrency_per_host),
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_host,
        "DOWNLOAD_DELAY": crawl.download_delay,
        "DOWNLOAD_DELAY_JITTER": 0.5 if crawl.download_delay > 0 else 0.0,
        "DOWNLOAD_TIMEOUT": crawl.timeout_seconds,
        "DOWNLOAD_MAXSIZE": crawl.max_page_bytes,
        "DOWNLOAD_WARNSIZE": 0,
        "RETRY_ENABLED": crawl.retries > 0,
        "RETRY_TIMES": crawl.retries,
        "RETRY_HTTP_CODES": RETRY_HTTP_CODES,
        "SITEKB_RETRY_BACKOFF": crawl.retry_backoff,
        "SITEKB_MAX_RETRY_AFTER": crawl.max_retry_after,
        "SITEKB_MAX_CRAWL_DELAY": crawl.max_crawl_delay,
        "REDIRECT_MAX_TIMES": crawl.max_redirects,
        "REDIRECT_ENABLED": crawl.max_redirects > 0,
        "DEPTH_LIMIT": 0,
        # Scrapy starts this many item workers per response; a page yields one item
        # and a few requests, so the default 100 mostly costs task switching.
        "CONCURRENT_ITEMS": 16,
        # Breadth first: with a page budget, shallow pages (the important ones) come first.
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        # Checks each address where the connection is made (DNS rebinding); see resolver.py.
        "TWISTED_DNS_RESOLVER": "sitekb_crawlers.resolver.GuardedResolver",
        "DUPEFILTER_CLASS": "sitekb_crawlers.middlewares.RedirectAwareDupeFilter",
        "TELNETCONSOLE_ENABLED": False,
        "COOKIES_ENABLED": False,
        "LOG_LEVEL": "ERROR",
        "DOWNLOADER_MIDDLEWARES": {
            "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None,
            "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
            "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
            "sitekb_crawlers.middlewares.ScopeGuardMiddleware": 50,
            "sitekb_crawlers.middlewares.SitekbRobotsTxtMiddleware": 100,
            "sitekb_crawlers.middlewares.SitemapUnchangedMiddleware": 120,
            "sitekb_crawlers.middlewares.PoliteRetryMiddleware": 550,
        },
        "SPIDER_MIDDLEWARES": {
            "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
        },
        "ITEM_PIPELINES": {"sitekb_crawlers.pipelines.PostgresPipeline": 300},
        "SITEKB_SITE_NAME": site.name,
        "SITEKB_SCOPE": Scope.values(site),
        "SITEKB_RUN_ID": run_id,
        "SITEKB_DATABASE_URL": database_url,
        "SITEKB_FULL_CRAWL": full,
        "SITEKB_USE_LASTMOD": crawl.use_sitemap_lastmod and not full,
        "SITEKB_WRITE_BATCH": 50,
    }
