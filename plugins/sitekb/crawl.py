"""The crawl stage: run the Scrapy spider in its own process and record the result.

Scrapy's reactor cannot restart inside a long-lived worker, so the spider runs
as ``python -m sitekb_crawlers.run``. Before that, one plain request to the
first start URL turns a dead site into a clear error instead of an empty
crawl. Settings read: none beyond the site config.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from sitekb.errors import CrawlFailed
from sitekb.sites import SiteConfig

CRAWL_TIMEOUT_SECONDS = 6 * 3600


def check_reachable(site: SiteConfig, timeout: float = 10) -> None:
    """Raise CrawlFailed if the first start URL does not answer at all."""
    url = site.start_urls[0]
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": site.crawl.user_agent})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
    except urllib.error.HTTPError:
        return  # the server answered; the spider records the status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CrawlFailed(
            f"the start URL {url} of site {site.name!r} is unreachable ({reason}). "
            "Check that the site is up and the URL is right (site config `start_urls` or --start-url); "
            "nothing was changed and the published snapshot stays live."
        ) from exc


def run_crawl(site: SiteConfig, run_id: str, database_url: str, *, full: bool = False) -> dict:
    """Crawl ``site`` into sitekb.pages; return the run statistics."""
    check_reachable(site)
    with tempfile.TemporaryDirectory(prefix="sitekb-crawl-") as tmp:
        config_path = Path(tmp) / "site.json"
        stats_path = Path(tmp) / "stats.json"
        config_path.write_text(site.model_dump_json())
        command = [
            sys.executable, "-m", "sitekb_crawlers.run",
            "--site-config", str(config_path), "--run-id", run_id,
            "--database-url", database_url, "--stats-out", str(stats_path),
        ]
        if full:
            command.append("--full")
        result = subprocess.run(command, capture_output=True, text=True, timeout=CRAWL_TIMEOUT_SECONDS)
        if result.returncode != 0 or not stats_path.exists():
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise CrawlFailed(f"the crawler process failed (exit {result.returncode}):\n{tail}")
        stats = json.loads(stats_path.read_text())
    if stats.get("db_write_error"):
        raise CrawlFailed(
            f"the crawler could not write pages to the database: {stats['db_write_error']}. "
            "Check the database (`sitekb db status`) and run again; the published snapshot stays live."
        )
    if stats.get("fetched", 0) + stats.get("not_modified", 0) == 0:
        examples = "; ".join(f"{k}: {v}" for k, v in stats.get("error_examples", {}).items()) or "no details"
        raise CrawlFailed(
            f"the crawl of {site.name!r} fetched no page ({examples}; errors {stats.get('errors')}). "
            "Check the start URLs and scope; the published snapshot stays live."
        )
    return stats
