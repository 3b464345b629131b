"""The crawl's ledgers: every URL left out and why (``sitekb.exclusions``), every request that got no
usable answer (``sitekb.fetch_failures``), and each crawl's statistics (``sitekb.crawl_stats``).

An exclusion is recorded per run, URL and rule, so a content owner can ask
which rule kept a page out in which run; the crawler records at most
``SITEKB_MAX_EXCLUSIONS_PER_RULE`` (1000) URLs per run and rule and counts the
rest in the crawl stats (``exclusions_unrecorded``). A fetch failure is recorded per run
and URL with its kind (``connection_refused``, ``timeout``, ``http_503``, ...):
the quality gate counts them as errors (:func:`sitekb.store.pages.run_totals`).
Crawl statistics are one row per run (a retried crawl overwrites its row); the
newest full crawl decides when the next one is due.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

_INSERT_EXCLUSION = """
INSERT INTO sitekb.exclusions (site, url, rule, detail, run_id)
VALUES (%(site)s, %(url)s, %(rule)s, %(detail)s, %(run_id)s)
ON CONFLICT (run_id, url, rule) DO NOTHING
"""


@dataclass(frozen=True)
class Exclusion:
    url: str
    rule: str
    detail: str = ""


def add_exclusions(cur: psycopg.Cursor, site: str, run_id: str, exclusions: Sequence[Exclusion]) -> None:
    """Record exclusions (inside the caller's transaction; a repeat is ignored)."""
    if exclusions:
        cur.executemany(_INSERT_EXCLUSION, [{"site": site, "run_id": run_id, "url": e.url, "rule": e.rule,
                                             "detail": e.detail} for e in exclusions])


_UPSERT_FAILURE = """
INSERT INTO sitekb.fetch_failures (site, url, kind, detail, run_id)
VALUES (%(site)s, %(url)s, %(kind)s, %(detail)s, %(run_id)s)
ON CONFLICT (run_id, url) DO UPDATE SET kind = EXCLUDED.kind, detail = EXCLUDED.detail, failed_at = now()
"""


@dataclass(frozen=True)
class FetchFailure:
    """A request that got no usable answer after its retries."""

    url: str
    kind: str
    detail: str = ""


def add_failures(cur: psycopg.Cursor, site: str, run_id: str, failures: Sequence[FetchFailure]) -> None:
    """Record fetch failures (inside the caller's transaction; a retried crawl overwrites its row)."""
    if failures:
        cur.executemany(_UPSERT_FAILURE, [{"site": site, "run_id": run_id, "url": f.url, "kind": f.kind,
                                           "detail": f.detail} for f in failures])


def fetch_failures(conn: psycopg.Connection, run_id: str) -> list[dict]:
    """The fetch failures of one run, by URL."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT url, kind, detail, failed_at FROM sitekb.fetch_failures WHERE run_id = %s ORDER BY url",
            (run_id,),
        ).fetchall()


def exclusions(conn: psycopg.Connection, *, site: str | None = None, run_id: str | None = None,
               rule: str | None = None) -> list[dict]:
    """The ledger; without a run, each (site, URL, rule) once, as the newest run that applied it recorded it."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT DISTINCT ON (site, url, rule) site, url, rule, detail, run_id, excluded_at
               FROM sitekb.exclusions
               WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(run)s::text IS NULL OR run_id = %(run)s)
                 AND (%(rule)s::text IS NULL OR rule = %(rule)s)
               ORDER BY site, url, rule, excluded_at DESC""",
            {"site": site, "run": run_id, "rule": rule},
        ).fetchall()


def record_crawl(conn: psycopg.Connection, site: str, run_id: str, stats: dict) -> None:
    """Store one run's crawl statistics (idempotent: a retried crawl overwrites its row)."""
    with conn.transaction():
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
                "run_id": run_id, "site": site, "full": bool(stats.get("full")),
                "seconds": stats.get("seconds", 0), "requests": stats.get("requests", 0),
                "bytes": stats.get("bytes", 0), "fetched": stats.get("fetched", 0),
                "not_modified": stats.get("not_modified", 0), "unchanged": stats.get("unchanged_by_sitemap", 0),
                "retries": stats.get("retries", 0),
                "excluded": json.dumps(stats.get("excluded", {})), "skipped": json.dumps(stats.get("skipped", {})),
                "errors": json.dumps(stats.get("errors", {})), "bad_input": json.dumps(stats.get("bad_input", {})),
                "stats": json.dumps(stats, default=str),
            },
        )


def last_full_crawl(conn: psycopg.Connection, site: str) -> datetime | None:
    """When the site's newest full crawl finished (None: never)."""
    return conn.execute("SELECT max(finished_at) FROM sitekb.crawl_stats WHERE site = %s AND full_crawl",
                        (site,)).fetchone()[0]


def crawls(conn: psycopg.Connection, site: str | None, limit: int) -> list[dict]:
    """Statistics of recent crawls, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT run_id, site, full_crawl, finished_at, seconds, requests, bytes, fetched, not_modified,
                      unchanged_by_sitemap, retries, excluded, skipped, errors, bad_input,
                      stats -> 'robots' AS robots
               FROM sitekb.crawl_stats WHERE %(site)s::text IS NULL OR site = %(site)s
               ORDER BY finished_at DESC, run_id DESC LIMIT %(limit)s""",
            {"site": site, "limit": limit},
        ).fetchall()
