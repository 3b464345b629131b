"""Entry point of one crawl, in its own process.

    python -m sitekb_crawlers.run --site-config site.json --run-id RUN \
        --database-url URL --stats-out stats.json [--full]

Reads the stored pages of earlier crawls (ETag/Last-Modified so unchanged
pages cost a 304, fetch times for sitemap ``lastmod``, links to follow from an
unchanged page), runs the site spider once, and writes the run statistics as
JSON to ``--stats-out``. The parent (``sitekb.crawl``) reads and stores them.
``--full`` ignores what is stored: every page is fetched again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg
from scrapy.crawler import CrawlerProcess

from sitekb.sites import SiteConfig
from sitekb_crawlers.settings import crawl_settings
from sitekb_crawlers.spiders.site import SiteSpider


def previous_pages(database_url: str, site: str) -> dict[str, dict]:
    """Stored pages with content: validators for conditional GET, fetch time for sitemap
    lastmod, links to follow when a page is unchanged."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """SELECT url, etag, last_modified, links, fetched_at FROM sitekb.pages
               WHERE site = %s AND status = 200 AND body IS NOT NULL AND excluded_rule IS NULL""",
            (site,),
        ).fetchall()
    return {url: {"etag": etag, "last_modified": lm, "links": links, "fetched_at": fetched}
            for url, etag, lm, links, fetched in rows}


GROUPS = ("excluded", "skipped", "errors", "error_examples", "bad_input", "robots", "tdmrep")


def summarise(stats: dict, seconds: float) -> dict:
    """The run statistics sitekb stores: sitekb/* counters plus bytes and requests."""
    out: dict = {"fetched": 0, "not_modified": 0, "unchanged_by_sitemap": 0,
                 **{group: {} for group in GROUPS}}
    for key, value in stats.items():
        if not key.startswith("sitekb/"):
            continue
        parts = key.split("/", 2)
        if len(parts) == 2:
            out[parts[1]] = value
        elif parts[1] in GROUPS:
            out[parts[1]][parts[2]] = value
    out["requests"] = stats.get("downloader/request_count", 0)
    out["responses"] = stats.get("downloader/response_count", 0)
    out["bytes"] = stats.get("downloader/response_bytes", 0)
    out["retries"] = stats.get("retry/count", 0)
    out["retries_by_reason"] = {k.split("/", 2)[2]: v for k, v in stats.items()
                                if k.startswith("retry/reason_count/")}
    out["finish_reason"] = stats.get("finish_reason")
    out["seconds"] = round(seconds, 3)
    # From spider open to close: the crawl without process and engine start-up.
    out["crawl_seconds"] = stats.get("elapsed_time_seconds")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site-config", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--stats-out", required=True, type=Path)
    parser.add_argument("--full", action="store_true", help="ignore stored pages: no conditional GET, no lastmod skip")
    args = parser.parse_args(argv)

    site = SiteConfig.model_validate_json(args.site_config.read_text())
    known = {} if args.full else previous_pages(args.database_url, site.name)
    settings = crawl_settings(site, run_id=args.run_id, database_url=args.database_url, full=args.full)
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(SiteSpider)
    started = time.monotonic()
    process.crawl(crawler, known=known)
    process.start()
    stats = summarise(crawler.stats.get_stats(), time.monotonic() - started)
    args.stats_out.write_text(json.dumps(stats, default=str, indent=2))
    if stats["finish_reason"] is None:
        # The crawl never started (e.g. the pipeline could not reach the database);
        # Scrapy logged why on stderr, which the parent shows.
        print("sitekb crawler: the crawl did not start", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
