"""The crawl stage: run the Scrapy spider in its own process and record the result.

Scrapy's reactor cannot restart inside a long-lived worker, so the spider runs
as ``python -m sitekb_crawlers.run``. Before that, one plain request to the
first start URL turns a dead site into a clear error instead of an empty
crawl. After it, the run statistics are stored in ``sitekb.crawl_stats``.

A crawl is *full* (stored validators and sitemap ``lastmod`` ignored, every
page fetched again) when asked, or when the site's last full crawl is older
than ``crawl.full_recrawl_days``; between full crawls unchanged pages cost a
304 or nothing.

Also owns :func:`text_document`: the crawler stores a PDF's text (not HTML)
in ``sitekb.pages.body``, and extraction turns it into a document with it.

Settings read: none beyond the site config.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from sitekb.errors import CrawlFailed
from sitekb.sites import SiteConfig

CRAWL_TIMEOUT_SECONDS = 6 * 3600
PDF_TYPE = "application/pdf"
_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")


def check_reachable(site: SiteConfig, timeout: float = 10) -> None:
    """Raise CrawlFailed if the first start URL does not answer at all."""
    url = site.start_urls[0]
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": site.crawl.identity})
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


def full_recrawl_due(database_url: str, site: SiteConfig, now: datetime | None = None) -> str | None:
    """Why this crawl must be full (crawl.full_recrawl_days), or None."""
    days = site.crawl.full_recrawl_days
    if days is None:
        return None
    from sitekb import db

    with db.connection(database_url) as conn:
        row = conn.execute(
            "SELECT max(finished_at) FROM sitekb.crawl_stats WHERE site = %s AND full_crawl", (site.name,)
        ).fetchone()
    last = row[0] if row else None
    if last is None:
        return "no full crawl recorded yet"
    age = (now or datetime.now(timezone.utc)) - last
    if age.total_seconds() >= days * 86400:
        return f"the last full crawl is {age.days} days old (crawl.full_recrawl_days = {days:g})"
    return None


def record_stats(database_url: str, site: SiteConfig, run_id: str, stats: dict) -> None:
    """Store one run's crawl statistics (idempotent: a retried crawl overwrites its row)."""
    from sitekb import db

    with db.connection(database_url) as conn, conn.transaction():
        conn.execute(
            """INSERT INTO sitekb.crawl_stats (run_id, site, full_crawl, seconds, requests, bytes, fetched,
                   not_modified, unchanged_by_sitemap, retries, excluded, skipped, errors, bad_input, stats)
               VALUES (%(run_id)s, %(site)s, %(full)s, %(seconds)s, %(requests)s, %(bytes)s, %(fetched)s,
                   %(not_modified)s, %(unchanged)s, %(retries)s, %(excluded)s, %(skipped)s, %(errors)s,
                   %(bad_input)s, %(stats)s)
               ON CONFLICT (run_id) DO UPDATE SET
                   site = EXCLUDED.site, full_crawl = EXCLUDED.full_crawl, finished_at = now(),
                   seconds = EXCLUDED.seconds, requests = EXCLUDED.requests, bytes = EXCLUDED.bytes,
                   fetched = EXCLUDED.fetched, not_modified = EXCLUDED.not_modified,
                   unchanged_by_sitemap = EXCLUDED.unchanged_by_sitemap, retries = EXCLUDED.retries,
                   excluded = EXCLUDED.excluded, skipped = EXCLUDED.skipped, errors = EXCLUDED.errors,
                   bad_input = EXCLUDED.bad_input, stats = EXCLUDED.stats""",
            {
                "run_id": run_id, "site": site.name, "full": bool(stats.get("full")),
                "seconds": stats.get("seconds", 0), "requests": stats.get("requests", 0),
                "bytes": stats.get("bytes", 0), "fetched": stats.get("fetched", 0),
                "not_modified": stats.get("not_modified", 0), "unchanged": stats.get("unchanged_by_sitemap", 0),
                "retries": stats.get("retries", 0),
                "excluded": json.dumps(stats.get("excluded", {})), "skipped": json.dumps(stats.get("skipped", {})),
                "errors": json.dumps(stats.get("errors", {})), "bad_input": json.dumps(stats.get("bad_input", {})),
                "stats": json.dumps(stats, default=str),
            },
        )


def run_crawl(site: SiteConfig, run_id: str, database_url: str, *, full: bool = False) -> dict:
    """Crawl ``site`` into sitekb.pages; store and return the run statistics."""
    check_reachable(site)
    full_reason = "asked" if full else full_recrawl_due(database_url, site)
    full = full_reason is not None
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
    stats.update(full=full, full_reason=full_reason)
    record_stats(database_url, site, run_id, stats)
    if stats.get("db_write_error"):
        raise CrawlFailed(
            f"the crawler could not write pages to the database: {stats['db_write_error']}. "
            "Check the database (`sitekb db status`) and run again; the published snapshot stays live."
        )
    if stats.get("fetched", 0) + stats.get("not_modified", 0) == 0:
        if stats.get("robots", {}).get("unreachable"):
            raise CrawlFailed(
                f"the robots.txt of {site.name!r} could not be fetched (server error or timeout: "
                f"{stats.get('error_examples', {}).get('robots', 'no details')}); as RFC 9309 asks, the crawler "
                "then treats the whole site as disallowed. Try again later; the published snapshot stays live."
            )
        examples = "; ".join(f"{k}: {v}" for k, v in stats.get("error_examples", {}).items()) or "no details"
        raise CrawlFailed(
            f"the crawl of {site.name!r} fetched no page ({examples}; errors {stats.get('errors')}). "
            "Check the start URLs and scope; the published snapshot stays live."
        )
    return stats


def is_text_page(content_type: str | None) -> bool:
    """True for pages whose stored body is plain text (PDF text), not HTML."""
    return (content_type or "").split(";")[0].strip().lower() == PDF_TYPE


def text_document(text: str, url: str):
    """A :class:`sitekb.extract.Document` of plain text the crawler stored (PDF text).

    The crawler writes the PDF's title as a first ``# Title`` line; None when
    there is no text at all.
    """
    from sitekb.extract import Document

    markdown = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n")).strip()
    if not _WORD.search(markdown):
        return None
    first = markdown.split("\n", 1)[0]
    title = first[2:].strip() if first.startswith("# ") else None
    return Document(
        url=url, canonical_url=None, title=title, description=None, author=None, published=None,
        modified=None, language=None, tags=(), markdown=markdown, word_count=len(_WORD.findall(markdown)),
        content_hash=hashlib.sha256(markdown.encode("utf-8")).hexdigest(),
        visible_words=len(_WORD.findall(markdown)),  # a PDF's text is all visible, no boilerplate
    )
