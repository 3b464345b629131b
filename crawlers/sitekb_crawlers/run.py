"""Entry point of one crawl, in its own process.

    python -m sitekb_crawlers.run --job job.json --stats-out stats.json

The job file (written by :mod:`sitekb.stages.crawl`, readable by its user
only) holds the site config, the run id, the database URL and whether the
crawl is full. The site config is validated here, once; the spider gets the
validated config and every other Scrapy component plain values from the
settings (:func:`sitekb_crawlers.settings.crawl_settings`). Before the crawl,
the stored pages of earlier crawls are read through the store (ETag and
Last-Modified so unchanged pages cost a 304, fetch times for sitemap
``lastmod``, links to follow from an unchanged page or one that could not be
fetched); a full crawl sends no validators and trusts no ``lastmod``, but
still follows the stored links of a page that fails, so a full and an
incremental crawl reach the same pages. The run statistics are written as JSON to ``--stats-out``; the parent
reads and stores them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scrapy.crawler import CrawlerProcess

from sitekb import store
from sitekb.sites import site_from_dict
from sitekb.store import pages
from sitekb_crawlers.settings import crawl_settings
from sitekb_crawlers.spiders.site import SiteSpider


GROUPS = ("excluded", "skipped", "errors", "error_examples", "bad_input", "robots", "tdmrep")


def summarise(stats: dict, seconds: float) -> dict:
    """The run statistics sitekb stores: sitekb/* counters plus bytes and requests."""
    out: dict = {"fetched": 0, "not_modified": 0, "unchanged_by_sitemap": 0, "failed_fetches": 0,
                 **{group: {} for group in GROUPS}}
    for key, value in stats.items():
        if not key.startswith("sitekb/"):
            continue
        parts = key.split("/", 2)
        if len(parts) == 2:
            out[parts[1]] = value
        elif parts[1] in GROUPS:
            if value == 0 and parts[1] in ("excluded", "skipped"):
                continue  # counted, then taken back (a max-depth refusal voided by a shorter path)
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
    parser.add_argument("--job", required=True, type=Path, help="the crawl's job file (JSON)")
    parser.add_argument("--stats-out", required=True, type=Path, help="where to write the run statistics (JSON)")
    args = parser.parse_args(argv)

    job = json.loads(args.job.read_text(encoding="utf-8"))
    site = site_from_dict(job["site"], source=str(args.job))
    full = bool(job.get("full"))
    with store.connection(job["database_url"]) as conn:
        known = pages.previous_pages(conn, site.name)
    settings = crawl_settings(site, run_id=job["run_id"], database_url=job["database_url"], full=full)
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(SiteSpider)
    started = time.monotonic()
    process.crawl(crawler, site=site, known=known)
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
