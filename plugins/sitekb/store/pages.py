"""Fetched pages (``sitekb.pages``): the latest fetch of every URL of a site.

The crawler writes them in batches (:func:`write_crawl_batch`, with the
exclusions and fetch failures of the batch, in one transaction); the extract
stage reads the pages a run kept (:func:`kept_pages`); the next crawl reads
what it needs for conditional requests (:func:`previous_pages`); the quality
gate reads what a run fetched and failed to fetch (:func:`run_totals`).
Upserts make a retried crawl safe: a page is one row per (site, URL).
Excluded pages keep no content; a URL whose fetch failed keeps its row as the
last good fetch left it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from sitekb.store import chunks, documents, ledger

_UPSERT = """
INSERT INTO sitekb.pages (site, url, final_url, status, content_type, etag, last_modified,
                          content_hash, body, headers, depth, excluded_rule, links, fetched_at,
                          first_run_id, last_run_id)
VALUES (%(site)s, %(url)s, %(final_url)s, %(status)s, %(content_type)s, %(etag)s, %(last_modified)s,
        %(content_hash)s, %(body)s, %(headers)s, %(depth)s, %(excluded_rule)s, %(links)s, %(fetched_at)s,
        %(run_id)s, %(run_id)s)
ON CONFLICT (site, url) DO UPDATE SET
    final_url = EXCLUDED.final_url, status = EXCLUDED.status, content_type = EXCLUDED.content_type,
    etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified, content_hash = EXCLUDED.content_hash,
    body = EXCLUDED.body, headers = EXCLUDED.headers, depth = EXCLUDED.depth,
    excluded_rule = EXCLUDED.excluded_rule, links = EXCLUDED.links, fetched_at = EXCLUDED.fetched_at,
    last_run_id = EXCLUDED.last_run_id
"""

# A 304 keeps the stored body and validators; it only marks the page as seen.
_TOUCH = """
UPDATE sitekb.pages SET last_run_id = %(run_id)s, fetched_at = %(fetched_at)s, depth = %(depth)s
WHERE site = %(site)s AND url = %(url)s
"""

# Unchanged by its sitemap lastmod: not fetched, so the stored fetch time stays
# (the next lastmod is compared with the real fetch, not with this skip).
_TOUCH_UNCHANGED = """
UPDATE sitekb.pages SET last_run_id = %(run_id)s, depth = %(depth)s
WHERE site = %(site)s AND url = %(url)s
"""

_PURGE = """
UPDATE sitekb.pages SET body = NULL, content_hash = NULL, etag = NULL, last_modified = NULL, links = '{}',
                        excluded_rule = %(rule)s
WHERE site = %(site)s AND url = %(url)s
"""


@dataclass(frozen=True)
class Fetched:
    """A page as the crawler stores it (body None for excluded or failed pages)."""

    url: str
    status: int
    final_url: str | None
    content_type: str | None
    etag: str | None
    last_modified: str | None
    content_hash: str | None
    body: str | None
    headers: dict
    depth: int
    excluded_rule: str | None
    links: Sequence[str]


@dataclass(frozen=True)
class Seen:
    """A page the crawl saw unchanged: a 304, or skipped because its sitemap lastmod did not move."""

    url: str
    depth: int
    by_sitemap: bool


@dataclass(frozen=True)
class Withdrawn:
    """A URL whose owner withdrew consent: its stored content is erased everywhere but in snapshots."""

    url: str
    rule: str


def write_crawl_batch(conn: psycopg.Connection, site: str, run_id: str, fetched_at: datetime, *,
                      fetched: Sequence[Fetched] = (), seen: Sequence[Seen] = (),
                      exclusions: Sequence[ledger.Exclusion] = (), withdrawn: Sequence[Withdrawn] = (),
                      failures: Sequence[ledger.FetchFailure] = ()) -> None:
    """Write one batch of a crawl in one transaction (safe to retry: upserts and idempotent inserts)."""
    common = {"site": site, "run_id": run_id, "fetched_at": fetched_at}
    with conn.transaction(), conn.cursor() as cur:
        if fetched:
            cur.executemany(_UPSERT, [{**common, **vars(page), "headers": json.dumps(page.headers),
                                       "links": list(page.links)} for page in fetched])
        touched = [{**common, "url": s.url, "depth": s.depth} for s in seen if not s.by_sitemap]
        unchanged = [{**common, "url": s.url, "depth": s.depth} for s in seen if s.by_sitemap]
        if touched:
            cur.executemany(_TOUCH, touched)
        if unchanged:
            cur.executemany(_TOUCH_UNCHANGED, unchanged)
        ledger.add_exclusions(cur, site, run_id, exclusions)
        ledger.add_failures(cur, site, run_id, failures)
        if withdrawn:
            # After the upserts: a withdrawal wins over anything written for the URL in this batch.
            cur.executemany(_PURGE, [{"site": site, "url": w.url, "rule": w.rule} for w in withdrawn])
            urls = [w.url for w in withdrawn]
            documents.erase_urls(cur, site, urls)
            chunks.erase_urls(cur, site, urls)


def previous_pages(conn: psycopg.Connection, site: str) -> dict[str, dict]:
    """Stored pages with content: validators for conditional GET, fetch time for sitemap
    lastmod, links to follow when a page is unchanged."""
    rows = conn.execute(
        """SELECT url, etag, last_modified, links, fetched_at FROM sitekb.pages
           WHERE site = %s AND status = 200 AND body IS NOT NULL AND excluded_rule IS NULL""",
        (site,),
    ).fetchall()
    return {url: {"etag": etag, "last_modified": lm, "links": links, "fetched_at": fetched}
            for url, etag, lm, links, fetched in rows}


@dataclass(frozen=True)
class Kept:
    url: str
    body: str | None             # None when ``previous`` is given: the page is unchanged, its body not read
    content_type: str | None
    content_hash: str | None = None
    # The newest document extracted before from this very body with the same extraction inputs, when
    # kept_pages is asked for one (``reuse``): its row in sitekb.documents.
    previous: dict | None = None


_PREVIOUS_DOCUMENT = """
    SELECT to_jsonb(d) - 'dedup_signature' FROM sitekb.documents d JOIN sitekb.runs r ON r.run_id = d.run_id
    WHERE d.site = p.site AND d.url = p.url AND d.run_id <> p.last_run_id AND d.page_hash = p.content_hash
      AND d.correction_id IS NULL AND d.extraction ->> 'inputs' = %(inputs)s
    ORDER BY r.started_at DESC LIMIT 1"""


def kept_pages(conn: psycopg.Connection, site: str, run_id: str, *, reuse: str | None = None) -> Iterator[Kept]:
    """The pages this run fetched or found unchanged and kept, with their bodies, streamed by URL.

    ``reuse``: the extraction inputs of the run (:func:`sitekb.extract.extraction_inputs`); a page whose
    body an earlier run already extracted with the same inputs comes with that document as ``previous``
    and without its body (the extract stage copies the document instead of extracting it again).
    """
    previous = f"({_PREVIOUS_DOCUMENT})" if reuse is not None else "NULL::jsonb"
    # A named (server-side) cursor streams the bodies; it needs a transaction.
    with conn.transaction(), conn.cursor(name="pages_of_run") as cur:
        cur.execute(
            f"""SELECT url, content_type, content_hash, prev, CASE WHEN prev IS NULL THEN body END
                FROM (SELECT p.*, {previous} AS prev FROM sitekb.pages p
                      WHERE p.site = %(site)s AND p.last_run_id = %(run)s AND p.status IN (200, 304)
                        AND p.body IS NOT NULL AND p.excluded_rule IS NULL) kept
                ORDER BY url""",
            {"site": site, "run": run_id, "inputs": reuse},
        )
        for url, content_type, content_hash, prev, body in cur:
            yield Kept(url, body, content_type, content_hash, prev)


def run_totals(conn: psycopg.Connection, site: str, run_id: str) -> dict:
    """What this run fetched and failed to fetch, for the quality gate.

    ``pages_ok``: pages fetched fine (2xx/3xx) or not modified; ``errors``: pages
    answered 4xx/5xx plus fetch failures; ``pages_seen``: every page row of the
    run plus the fetch failures (the error rate's denominator); ``failed_fetches``
    and ``failed_by_kind``: the requests that got no usable answer. A failure of
    a URL that also has a page row of the run (a retried crawl that reached it
    after all) is not counted.
    """
    ok, errors, seen = conn.execute(
        """SELECT count(*) FILTER (WHERE status BETWEEN 200 AND 399 OR status = 304),
                  count(*) FILTER (WHERE status >= 400 OR status = 0),
                  count(*)
           FROM sitekb.pages WHERE site = %s AND last_run_id = %s""",
        (site, run_id),
    ).fetchone()
    by_kind = dict(conn.execute(
        """SELECT f.kind, count(*) FROM sitekb.fetch_failures f
           WHERE f.run_id = %(run)s AND f.site = %(site)s
             AND NOT EXISTS (SELECT 1 FROM sitekb.pages p
                             WHERE p.site = f.site AND p.url = f.url AND p.last_run_id = f.run_id)
           GROUP BY f.kind ORDER BY f.kind""",
        {"site": site, "run": run_id},
    ).fetchall())
    failed = sum(by_kind.values())
    return {"pages_ok": ok, "errors": errors + failed, "pages_seen": seen + failed, "failed_fetches": failed,
            "failed_by_kind": by_kind}
