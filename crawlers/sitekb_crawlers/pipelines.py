"""Item pipeline that streams pages, exclusions and fetch failures into Postgres in batches, through the store.

Writes happen in a thread (``deferToThread``) so the reactor never blocks on
the database; items are buffered and flushed every ``SITEKB_WRITE_BATCH``
items and when the spider closes, so a crawl never holds the whole site in
memory. The SQL is the store's (:func:`sitekb.store.pages.write_crawl_batch`):
upserts make a retried crawl safe, a page is one row per (site, URL).

Excluded pages keep no content: their row loses body, validators and links;
when the owner withdrew consent (robots.txt, opt-out, TDM reservation) the
URL's rows in the staging tables of earlier runs are erased as well
(published snapshots are immutable and lose the page at the next snapshot).
A fetch failure goes to ``sitekb.fetch_failures`` and leaves the URL's page row
as it was.

Pages are written by anyone: before an item is buffered, the characters Postgres
text cannot hold (NUL, lone surrogates) are removed from every string it carries
(:func:`sitekb.untrusted.storable`), counted in ``sitekb/bad_input/unstorable_chars``.
The exclusion ledger is bounded: per run and rule the first
``SITEKB_MAX_EXCLUSIONS_PER_RULE`` URLs get a row, the rest are only counted
(``sitekb/exclusions_unrecorded``; the ``excluded/*`` and ``skipped/*`` stats count
them all), so a flood of refused URLs cannot write a million rows. A withdrawal of
consent past the bound still erases the URL's stored content.

A *provisional* exclusion (``max-depth``: the URL may yet be reached at an allowed
depth by a shorter path) is held, not written, until the spider closes; a
:class:`VoidedExclusion` for it drops it, so the ledger of a run holds only the
URLs still beyond the limit when the crawl ended (the ledger has no deletes).

Settings read: SITEKB_DATABASE_URL, SITEKB_RUN_ID, SITEKB_SITE_NAME, SITEKB_WRITE_BATCH,
SITEKB_MAX_EXCLUSIONS_PER_RULE.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import Counter
from datetime import datetime, timezone

import psycopg
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.threads import deferToThread

from sitekb import store
from sitekb.store import ledger, pages
from sitekb.untrusted import storable_value
from sitekb_crawlers.items import ExclusionItem, FailureItem, PageItem, VoidedExclusion

MAX_EXCLUSIONS_PER_RULE = 1000


class PostgresPipeline:
    def __init__(self, database_url: str, site: str, run_id: str, batch_size: int, crawler=None,
                 max_exclusions_per_rule: int = MAX_EXCLUSIONS_PER_RULE):
        self.crawler = crawler
        self.max_exclusions_per_rule = max_exclusions_per_rule
        self.exclusions_by_rule: Counter[str] = Counter()
        self.database_url = database_url
        self.site = site
        self.run_id = run_id
        self.batch_size = batch_size
        self.buffer: list = []
        # (url, rule) -> entry of provisional exclusions, written at close; and the ones voided
        # (a void can overtake its exclusion: items of different responses run concurrently).
        self.provisional: dict[tuple[str, str], ExclusionItem] = {}
        self.voided: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.conn: psycopg.Connection | None = None

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        return cls(
            database_url=settings.get("SITEKB_DATABASE_URL"),
            site=settings.get("SITEKB_SITE_NAME"),
            run_id=settings.get("SITEKB_RUN_ID"),
            batch_size=settings.getint("SITEKB_WRITE_BATCH", 50),
            crawler=crawler,
            max_exclusions_per_rule=settings.getint("SITEKB_MAX_EXCLUSIONS_PER_RULE", MAX_EXCLUSIONS_PER_RULE),
        )

    def open_spider(self, spider=None):
        self.conn = store.connect(self.database_url)

    async def close_spider(self, spider=None):
        batch, self.buffer = [*self.buffer, *self.provisional.values()], []
        self.provisional = {}
        try:
            await maybe_deferred_to_future(deferToThread(self._write, batch))
        except Exception as exc:  # noqa: BLE001 - recorded; run_crawl turns it into CrawlFailed
            self._record_failure(exc)
        finally:
            if self.conn is not None:
                self.conn.close()

    async def process_item(self, item, spider=None):
        if isinstance(item, VoidedExclusion):
            self._void(item)
            return item
        if not isinstance(item, (PageItem, ExclusionItem, FailureItem)):
            return item
        entry = self._storable(item)
        if isinstance(item, ExclusionItem):
            if item.provisional and (item.url, item.rule) in self.voided:
                return item
            self.exclusions_by_rule[item.rule] += 1
            if self.exclusions_by_rule[item.rule] > self.max_exclusions_per_rule:
                self._inc("exclusions_unrecorded")
                if not item.purge:
                    return item
                # No ledger row, but a withdrawal of consent still erases what is stored.
                entry = pages.Withdrawn(entry.url, entry.rule)
            elif item.provisional:
                self.provisional[(item.url, item.rule)] = entry
                return item
        self.buffer.append(entry)
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

    def _void(self, item: VoidedExclusion) -> None:
        """Drop a held provisional exclusion (its URL was admitted after all)."""
        key = (item.url, item.rule)
        self.voided.add(key)
        if self.provisional.pop(key, None) is not None:
            self.exclusions_by_rule[item.rule] -= 1   # its place in the ledger's bound is free again

    def _inc(self, key: str, count: int = 1) -> None:
        if self.crawler is not None:
            self.crawler.stats.inc_value(f"sitekb/{key}", count)

    def _storable(self, item):
        """The item without characters Postgres text cannot hold (NUL, lone surrogates), counted."""
        changes, removed = {}, 0
        for field in dataclasses.fields(item):
            value = getattr(item, field.name)
            if isinstance(value, (str, list, dict)):
                cleaned, count = storable_value(value)
                if count:
                    changes[field.name] = cleaned
                    removed += count
        if not removed:
            return item
        self._inc("bad_input/unstorable_chars", removed)
        self._inc("bad_input/unstorable_text_items")
        return dataclasses.replace(item, **changes)

    def _record_failure(self, exc: Exception) -> None:
        if self.crawler is not None:
            self.crawler.stats.set_value("sitekb/db_write_error", str(exc).strip().splitlines()[0])

    def _write(self, batch: list) -> None:
        if not batch:
            return
        fetched, seen, exclusions, withdrawn, failed = [], [], [], [], []
        for item in batch:
            if isinstance(item, pages.Withdrawn):  # an exclusion past the ledger's bound
                withdrawn.append(item)
            elif isinstance(item, FailureItem):
                failed.append(ledger.FetchFailure(item.url, item.kind, item.detail))
            elif isinstance(item, ExclusionItem):
                exclusions.append(ledger.Exclusion(item.url, item.rule, item.detail))
                if item.purge:
                    withdrawn.append(pages.Withdrawn(item.url, item.rule))
            elif item.not_modified:
                seen.append(pages.Seen(item.url, item.depth, by_sitemap=item.unchanged_by_sitemap))
            else:
                body = item.body if item.excluded_rule is None else None
                fetched.append(pages.Fetched(
                    url=item.url, status=item.status, final_url=item.final_url, content_type=item.content_type,
                    etag=item.etag if body else None, last_modified=item.last_modified if body else None,
                    content_hash=hashlib.sha256(body.encode()).hexdigest() if body else None, body=body,
                    headers=item.headers, depth=item.depth, excluded_rule=item.excluded_rule,
                    links=item.links if body else [],
                ))
        with self.lock:
            pages.write_crawl_batch(self.conn, self.site, self.run_id, datetime.now(timezone.utc), fetched=fetched,
                                    seen=seen, exclusions=exclusions, withdrawn=withdrawn, failures=failed)
