"""Item pipeline that streams pages and exclusions into Postgres in batches.

Writes happen in a thread (``deferToThread``) so the reactor never blocks on
the database; items are buffered and flushed every ``SITEKB_WRITE_BATCH``
items and when the spider closes, so a crawl never holds the whole site in
memory. Upserts make a retried crawl safe: a page is one row per (site, URL).

Excluded pages keep no content: their row loses body, validators and links;
when the owner withdrew consent (robots.txt, opt-out, TDM reservation) the
URL's rows in the staging tables ``sitekb.documents`` and ``sitekb.chunks``
of earlier runs are erased as well (published snapshots are immutable and
lose the page at the next snapshot).

Settings read: SITEKB_DATABASE_URL, SITEKB_RUN_ID, SITEKB_SITE, SITEKB_WRITE_BATCH.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timezone

import psycopg
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.threads import deferToThread

from sitekb_crawlers.items import ExclusionItem, PageItem
from sitekb_crawlers.settings import site_from_settings

UPSERT_PAGE = """
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
TOUCH_PAGE = """
UPDATE sitekb.pages SET last_run_id = %(run_id)s, fetched_at = %(fetched_at)s, depth = %(depth)s
WHERE site = %(site)s AND url = %(url)s
"""

# Unchanged by its sitemap lastmod: not fetched, so the stored fetch time stays
# (the next lastmod is compared with the real fetch, not with this skip).
TOUCH_UNCHANGED = """
UPDATE sitekb.pages SET last_run_id = %(run_id)s, depth = %(depth)s
WHERE site = %(site)s AND url = %(url)s
"""

PURGE_PAGE = """
UPDATE sitekb.pages SET body = NULL, content_hash = NULL, etag = NULL, last_modified = NULL, links = '{}',
                        excluded_rule = %(rule)s
WHERE site = %(site)s AND url = %(url)s
"""
PURGE_DOCUMENTS = "DELETE FROM sitekb.documents WHERE site = %(site)s AND url = %(url)s"
PURGE_CHUNKS = "DELETE FROM sitekb.chunks WHERE site = %(site)s AND url = %(url)s"

INSERT_EXCLUSION = """
INSERT INTO sitekb.exclusions (site, url, rule, detail, run_id)
VALUES (%(site)s, %(url)s, %(rule)s, %(detail)s, %(run_id)s)
ON CONFLICT (run_id, url, rule) DO NOTHING
"""


class PostgresPipeline:
    def __init__(self, database_url: str, site: str, run_id: str, batch_size: int, crawler=None):
        self.crawler = crawler
        self.database_url = database_url
        self.site = site
        self.run_id = run_id
        self.batch_size = batch_size
        self.buffer: list = []
        self.lock = threading.Lock()
        self.conn: psycopg.Connection | None = None

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        return cls(
            database_url=settings.get("SITEKB_DATABASE_URL"),
            site=site_from_settings(settings).name,
            run_id=settings.get("SITEKB_RUN_ID"),
            batch_size=settings.getint("SITEKB_WRITE_BATCH", 50),
            crawler=crawler,
        )

    def open_spider(self, spider=None):
        self.conn = psycopg.connect(self.database_url, autocommit=True)

    async def close_spider(self, spider=None):
        batch, self.buffer = self.buffer, []
        try:
            await maybe_deferred_to_future(deferToThread(self._write, batch))
        except Exception as exc:  # noqa: BLE001 - recorded; run_crawl turns it into CrawlFailed
            self._record_failure(exc)
        finally:
            if self.conn is not None:
                self.conn.close()

    async def process_item(self, item, spider=None):
        if not isinstance(item, (PageItem, ExclusionItem)):
            return item
        self.buffer.append(item)
        if len(self.buffer) < self.batch_size:
            return item
        batch, self.buffer = self.buffer, []
        try:
            await maybe_deferred_to_future(deferToThread(self._write, batch))
        except Exception as exc:  # noqa: BLE001 - any failed write must stop the crawl, not lose pages
            # Losing pages silently is worse than stopping: record why and close the spider.
            self._record_failure(exc)
            if self.crawler is not None:
                deferred_from_coro(self.crawler.engine.close_spider_async(reason="db_write_failed"))
            raise
        return item

    def _record_failure(self, exc: Exception) -> None:
        if self.crawler is not None:
            self.crawler.stats.set_value("sitekb/db_write_error", str(exc).strip().splitlines()[0])

    def _write(self, batch: list) -> None:
        if not batch:
            return
        now = datetime.now(timezone.utc)
        pages, touches, unchanged, exclusions, purges = [], [], [], [], []
        for item in batch:
            if isinstance(item, ExclusionItem):
                exclusion = {"site": self.site, "url": item.url, "rule": item.rule,
                             "detail": item.detail, "run_id": self.run_id}
                exclusions.append(exclusion)
                if item.purge:
                    purges.append(exclusion)
            elif item.not_modified:
                touch = {"site": self.site, "url": item.url, "run_id": self.run_id, "fetched_at": now,
                         "depth": item.depth}
                (unchanged if item.unchanged_by_sitemap else touches).append(touch)
            else:
                body = item.body if item.excluded_rule is None else None
                pages.append({
                    "site": self.site, "url": item.url, "final_url": item.final_url, "status": item.status,
                    "content_type": item.content_type, "etag": item.etag if body else None,
                    "last_modified": item.last_modified if body else None,
                    "content_hash": hashlib.sha256(body.encode()).hexdigest() if body else None,
                    "body": body, "headers": json.dumps(item.headers), "depth": item.depth,
                    "excluded_rule": item.excluded_rule, "links": item.links if body else [],
                    "fetched_at": now, "run_id": self.run_id,
                })
        with self.lock, self.conn.transaction():
            with self.conn.cursor() as cur:
                if pages:
                    cur.executemany(UPSERT_PAGE, pages)
                if touches:
                    cur.executemany(TOUCH_PAGE, touches)
                if unchanged:
                    cur.executemany(TOUCH_UNCHANGED, unchanged)
                if exclusions:
                    cur.executemany(INSERT_EXCLUSION, exclusions)
                # After the upserts: a purge wins over anything written for the URL in this batch.
                for statement in (PURGE_PAGE, PURGE_DOCUMENTS, PURGE_CHUNKS):
                    if purges:
                        cur.executemany(statement, purges)
