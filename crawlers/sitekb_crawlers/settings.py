"""Scrapy settings for the sitekb crawler, derived from a site config.

``crawl_settings(site, ...)`` maps the site's scope and politeness onto
Scrapy's settings; components read the site back with
:func:`site_from_settings` in their ``from_crawler``.
"""

from __future__ import annotations

from sitekb.sites import SiteConfig

BOT_NAME = "sitekb"
SPIDER_MODULES = ["sitekb_crawlers.spiders"]
ROBOTSTXT_OBEY = True
TELNETCONSOLE_ENABLED = False
COOKIES_ENABLED = False


def crawl_settings(site: SiteConfig, *, run_id: str, database_url: str, full: bool = False) -> dict:
    crawl = site.crawl
    return {
        "BOT_NAME": BOT_NAME,
        "USER_AGENT": crawl.user_agent,
        "ROBOTSTXT_OBEY": crawl.obey_robots_txt,
        "ROBOTSTXT_USER_AGENT": crawl.user_agent.split("/")[0],
        "CONCURRENT_REQUESTS": max(8, crawl.concurrency_per_host),
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_host,
        "DOWNLOAD_DELAY": crawl.download_delay,
        "RANDOMIZE_DOWNLOAD_DELAY": crawl.download_delay > 0,
        "DOWNLOAD_TIMEOUT": crawl.timeout_seconds,
        "DOWNLOAD_MAXSIZE": crawl.max_page_bytes,
        "DOWNLOAD_WARNSIZE": 0,
        "RETRY_ENABLED": crawl.retries > 0,
        "RETRY_TIMES": crawl.retries,
        # Transient statuses only: a 404 or 403 will not change on retry.
        "RETRY_HTTP_CODES": [408, 429, 500, 502, 503, 504, 522, 524],
        "REDIRECT_MAX_TIMES": 5,
        "DEPTH_LIMIT": crawl.max_depth,
        "DEPTH_STATS_VERBOSE": False,
        "TELNETCONSOLE_ENABLED": False,
        "COOKIES_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "DOWNLOADER_MIDDLEWARES": {"sitekb_crawlers.middlewares.ScopeGuardMiddleware": 50},
        "ITEM_PIPELINES": {"sitekb_crawlers.pipelines.PostgresPipeline": 300},
        "SITEKB_SITE": site.model_dump(mode="json"),
        "SITEKB_RUN_ID": run_id,
        "SITEKB_DATABASE_URL": database_url,
        "SITEKB_FULL_CRAWL": full,
        "SITEKB_WRITE_BATCH": 50,
    }


def site_from_settings(settings) -> SiteConfig:
    return SiteConfig.model_validate(settings.getdict("SITEKB_SITE"))
