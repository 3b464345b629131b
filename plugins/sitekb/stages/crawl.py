"""The crawl stage: run the Scrapy spider in its own process and record what it did.

Scrapy's reactor cannot restart inside a long-lived worker, so the spider runs
as ``python -m sitekb_crawlers.run``, handed a job file (the site config, the
run id, the database URL; readable by this user only, so the URL's password
never shows in a process list). Before that, one plain request to the first
start URL (to the address the crawler's private-address rule allows, no
redirect followed) turns a dead site into a clear error instead of an empty crawl.
After it, the run statistics are stored in ``sitekb.crawl_stats``; the
crawler itself records every failed fetch in ``sitekb.fetch_failures``, which
the quality gate counts as errors.

A crawl is *full* (stored validators and sitemap ``lastmod`` ignored, every
page fetched again) when the run asks for it (``full_recrawl``), or when the
site's last full crawl is older than ``crawl.full_recrawl_days``; between full
crawls unchanged pages cost a 304 or nothing.

A rebuild run (params ``rebuild_of``: ``sitekb rebuild``) sends no request: its
crawl stage takes up the pages of the site's newest crawl, judged again by the
current config (:mod:`sitekb.restage`).

Settings read: none beyond the site config and the run's params.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import http.client
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from sitekb.errors import CrawlFailed
from sitekb.sites import SiteConfig
from sitekb.stages.context import RunContext, StageResult
from sitekb.store import ledger

PR_SET_PDEATHSIG = 1   # prctl(2): the signal a process gets when its parent dies

log = logging.getLogger(__name__)

CRAWL_TIMEOUT_SECONDS = 6 * 3600


def run(ctx: RunContext) -> StageResult:
    """Crawl the run's site into ``sitekb.pages`` (a rebuild stages its source crawl's pages instead)."""
    if ctx.params.get("rebuild_of"):
        from sitekb import restage

        return restage.run(ctx)
    stats = crawl_site(ctx.conn, ctx.site, ctx.run_id, ctx.database_url, full=bool(ctx.params.get("full_recrawl")))
    full_reason = stats["full_reason"]
    pages = stats.get("fetched", 0) + stats.get("not_modified", 0)
    scalars = {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}
    excluded = stats.get("excluded", {})
    return StageResult(
        counts={**scalars, "pages": pages},
        details={k: v for k, v in stats.items() if isinstance(v, (dict, list))},
        summary=(f"{'full' if full_reason else 'incremental'} crawl"
                 + (f" ({full_reason})" if full_reason and full_reason != "asked" else "")
                 + f": {pages} pages ({stats.get('not_modified', 0)} not modified), {stats.get('requests', 0)} "
                 f"requests, {stats.get('failed_fetches', 0)} failed fetches; excluded {_counts(excluded)}; "
                 f"errors {_counts(stats.get('errors', {}))}"),
    )


def crawl_site(conn: psycopg.Connection, site: SiteConfig, run_id: str, database_url: str, *,
               full: bool = False) -> dict:
    """Crawl ``site`` (fully when asked or due), store the statistics, and fail clearly on a useless crawl."""
    full_reason = "asked" if full else full_recrawl_due(conn, site)
    stats = crawl(site, run_id, database_url, full=full_reason is not None)
    stats["full_reason"] = full_reason
    ledger.record_crawl(conn, site.name, run_id, stats)
    check_outcome(site, stats)
    return stats


def full_recrawl_due(conn: psycopg.Connection, site: SiteConfig, now: datetime | None = None) -> str | None:
    """Why this crawl must be full (crawl.full_recrawl_days), or None."""
    days = site.crawl.full_recrawl_days
    if days is None:
        return None
    last = ledger.last_full_crawl(conn, site.name)
    if last is None:
        return "no full crawl recorded yet"
    age = (now or datetime.now(timezone.utc)) - last
    if age.total_seconds() >= days * 86400:
        return f"the last full crawl is {age.days} days old (crawl.full_recrawl_days = {days:g})"
    return None


def check_reachable(site: SiteConfig, timeout: float = 10) -> None:
    """Raise CrawlFailed if the first start URL does not answer at all, or may not be fetched.

    The same address rule as the crawler's: the host is resolved once, refused
    if any address is private (unless ``crawl.allow_private_addresses``), and
    the request goes to the address checked. Any HTTP answer, 3xx included,
    means reachable: redirects are not followed here (the spider follows them
    within scope), so this request cannot be sent anywhere else.
    """
    url = site.start_urls[0]
    try:
        address = _checked_address(site, url)
        status = _first_answer(url, address, site.crawl.identity, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise CrawlFailed(
            f"the start URL {url} of site {site.name!r} is unreachable ({exc}). "
            "Check that the site is up and the URL is right (site config `start_urls` or --start-url); "
            "nothing was changed and the published snapshot stays live."
        ) from exc
    log.info("start URL %s answered %s", url, status)


def _checked_address(site: SiteConfig, url: str) -> tuple[str, int]:
    """The address to connect to for ``url``; CrawlFailed for a private one when not allowed."""
    from sitekb_crawlers.parsers import is_private_host  # the crawler's rule; lxml stays out of DAG parsing

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CrawlFailed(f"the start URL {url} of site {site.name!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    private = sorted({info[4][0] for info in infos if is_private_host(info[4][0])})
    if (private or is_private_host(parts.hostname)) and not site.crawl.allow_private_addresses:
        raise CrawlFailed(
            f"the start URL {url} of site {site.name!r} resolves to a private address "
            f"({', '.join(private) or parts.hostname}). Only for a site you run yourself (the demo, tests): "
            "add --allow-private to `sitekb run --start-url`, or set crawl.allow_private_addresses: true "
            "in the site file"
        )
    return infos[0][4][0], port


def _first_answer(url: str, address: tuple[str, int], agent: str, timeout: float) -> int:
    """GET ``url`` from exactly ``address`` (no redirect followed); the status line's code."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(host, address[1], timeout=timeout,
                                            context=ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(host, address[1], timeout=timeout)
    connection.pinned = address[0]
    try:
        connection.request("GET", urlunsplit(("", "", parts.path or "/", parts.query, "")),
                           headers={"User-Agent": agent, "Host": parts.netloc.rsplit("@", 1)[-1]})
        response = connection.getresponse()
        response.read(1024)
        return response.status
    finally:
        connection.close()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    pinned = ""

    def connect(self):
        self.sock = socket.create_connection((self.pinned, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    pinned = ""

    def connect(self):
        sock = socket.create_connection((self.pinned, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def die_with_parent() -> None:
    """In the crawler process, before it starts: the kernel kills it when its parent dies (Linux).

    A killed ``sitekb run`` or Airflow task must not leave a crawler writing
    pages as a dead run. Elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def crawl(site: SiteConfig, run_id: str, database_url: str, *, full: bool = False) -> dict:
    """Crawl ``site`` into sitekb.pages in a Scrapy process of its own; return the run statistics."""
    check_reachable(site)
    with tempfile.TemporaryDirectory(prefix="sitekb-crawl-") as tmp:
        job_path = Path(tmp) / "job.json"
        stats_path = Path(tmp) / "stats.json"
        descriptor = os.open(job_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as job:
            json.dump({"site": site.model_dump(mode="json"), "run_id": run_id, "database_url": database_url,
                       "full": full}, job)
        command = [sys.executable, "-m", "sitekb_crawlers.run", "--job", str(job_path),
                   "--stats-out", str(stats_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=CRAWL_TIMEOUT_SECONDS,
                                preexec_fn=die_with_parent)
        if result.returncode != 0 or not stats_path.exists():
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise CrawlFailed(f"the crawler process failed (exit {result.returncode}):\n{tail}")
        if result.stderr.strip():
            log.warning("the crawler said: %s", result.stderr.strip()[-2000:])
        stats = json.loads(stats_path.read_text())
    stats["full"] = full
    return stats


def check_outcome(site: SiteConfig, stats: dict) -> None:
    """Turn a crawl that could not write or fetched nothing into a clear CrawlFailed."""
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


def _counts(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"
