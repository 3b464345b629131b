"""Downloader components that make the crawl safe and polite.

- :class:`ScopeGuardMiddleware` keeps every request, redirects included, in
  scope: off-site origins (another host, or another port of the site's host),
  configured patterns and private/loopback literal addresses (unless the site
  config allows them) are refused before any byte is sent. What a host *name*
  resolves to is checked where the connection is made, by
  :class:`sitekb_crawlers.resolver.GuardedResolver`: resolving here and letting
  Scrapy resolve again would let a rebinding name answer differently.
- :class:`SitekbRobotsTxtMiddleware` is Scrapy's robots.txt middleware with
  RFC 9309's edge cases (4xx: no rules; 5xx or unreachable: everything
  disallowed; only the first 500 KiB read), ``Crawl-delay`` applied as the
  host's download delay, and counters for missing, huge and broken files.
- :class:`PoliteRetryMiddleware` replaces Scrapy's RetryMiddleware: transient
  failures (timeouts, lost connections, 408/429/5xx) are retried with
  exponential backoff, 429 and 503 wait what ``Retry-After`` asks, and the
  wait pauses the whole host, not only the one URL. A permanent status
  (404, 403, 410, …) is never retried.
- :class:`SitemapUnchangedMiddleware` answers a request the spider marked
  unchanged (sitemap ``lastmod`` not newer than the stored fetch) with a
  synthetic 304 after robots.txt allowed it, so no byte is fetched.
- :class:`RedirectAwareDupeFilter` counts redirect loops and redirects to a
  page already fetched, which Scrapy's filter drops silently.

Settings read: SITEKB_SCOPE, RETRY_ENABLED, RETRY_TIMES, RETRY_HTTP_CODES,
RETRY_EXCEPTIONS, SITEKB_RETRY_BACKOFF, SITEKB_MAX_RETRY_AFTER,
SITEKB_MAX_CRAWL_DELAY, DOWNLOAD_DELAY, ROBOTSTXT_* (Scrapy's).
"""

from __future__ import annotations

import logging
from time import monotonic

from scrapy import signals
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.dupefilters import RFPDupeFilter
from scrapy.exceptions import IgnoreRequest, NotConfigured, StopDownload
from scrapy.http import Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler, load_object

from sitekb_crawlers.parsers import Scope, retry_after_seconds, robots_looks_broken

log = logging.getLogger(__name__)

ROBOTS_MAX_BYTES = 500 * 1024   # RFC 9309 2.5: parse at least 500 KiB; we parse exactly that
DISALLOW_ALL = b"User-agent: *\nDisallow: /\n"
MAX_BACKOFF_SECONDS = 60.0


class OutOfScope(IgnoreRequest):
    def __init__(self, rule: str, url: str):
        super().__init__(f"{rule}: {url}")
        self.rule = rule


class ScopeGuardMiddleware:
    """Refuses out-of-scope requests with the rule that keeps them out (see :class:`Scope`)."""

    def __init__(self, scope: Scope):
        self.scope = scope

    @classmethod
    def from_crawler(cls, crawler):
        return cls(Scope(**crawler.settings.getdict("SITEKB_SCOPE")))

    def process_request(self, request, spider=None):
        rule = self.scope.why_out(request.url)
        if rule is not None:
            raise OutOfScope(rule, request.url)
        return None


# -- host pauses ------------------------------------------------------------------

def pause_host(crawler, request: Request, seconds: float) -> bool:
    """Hold every request to the request's host for ``seconds``; False when not running.

    Scrapy's downloader waits ``delay - (now - lastseen)`` before the next
    request of a slot, and only when the slot's delay is positive, so the
    slot gets a token delay and a ``lastseen`` in the future.
    """
    try:
        downloader = crawler.engine.downloader
    except (AttributeError, RuntimeError):  # no crawler, or the crawl has not started
        return False
    if downloader is None or seconds <= 0:
        return False
    key = request.meta.get("download_slot") or downloader.get_slot_key(request)
    slot = downloader.slots.get(key)
    if slot is None:
        return False
    if slot.delay <= 0:
        slot.delay = 0.001
    shortest_delay = slot.delay * (1 - min(slot.jitter, 1.0))
    slot.lastseen = max(slot.lastseen, monotonic() + seconds - shortest_delay)
    return True


def set_host_delay(crawler, host: str, delay: float) -> None:
    """Make ``delay`` (seconds, no jitter) the minimum gap between requests to ``host``."""
    downloader = crawler.engine.downloader
    current = downloader.per_slot_settings.get(host, {})
    downloader.per_slot_settings[host] = {**current, "delay": max(delay, current.get("delay", 0)), "jitter": 0}
    slot = downloader.slots.get(host)
    if slot is not None and slot.delay < delay:
        slot.delay = delay
        slot.jitter = 0


# -- robots.txt ---------------------------------------------------------------------

class SitekbRobotsTxtMiddleware(RobotsTxtMiddleware):
    """robots.txt per RFC 9309, Crawl-delay obeyed, and each oddity counted."""

    def __init__(self, crawler):
        super().__init__(crawler)
        settings = crawler.settings
        self.max_crawl_delay = settings.getfloat("SITEKB_MAX_CRAWL_DELAY", 30)
        self.base_delay = settings.getfloat("DOWNLOAD_DELAY")
        # The spider asks this middleware for robots.txt Sitemap lines, so the
        # file is fetched once per host.
        crawler.sitekb_robots = self
        crawler.signals.connect(self._cap_body, signal=signals.bytes_received)

    async def robot_parser(self, request: Request):
        url = urlparse_cached(request)
        netloc = url.netloc
        if netloc not in self._parsers:
            from twisted.internet.defer import Deferred

            self._parsers[netloc] = Deferred()
            robotsreq = Request(
                f"{url.scheme}://{netloc}/robots.txt",
                priority=self.DOWNLOAD_PRIORITY,
                # Size is capped by _cap_body (a huge file is read in part, not refused).
                meta={"dont_obey_robotstxt": True, "sitekb_robots": True, "download_maxsize": 0},
                callback=NO_CALLBACK,
            )
            try:
                resp = await self.crawler.engine.download_async(robotsreq)
                await self._parse_robots(resp, netloc, request)
            except Exception as exc:  # noqa: BLE001 - any failure means "unreachable", handled per RFC
                self._robots_error(exc, netloc)
            self._stats.inc_value("robotstxt/request_count")
        return await super().robot_parser(request)

    def _cap_body(self, data, request, spider=None):
        if not request.meta.get("sitekb_robots"):
            return
        received = request.meta.get("sitekb_received", 0) + len(data)
        request.meta["sitekb_received"] = received
        if received > ROBOTS_MAX_BYTES:
            raise StopDownload(fail=False)

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        stats = self._stats
        body = response.body
        if response.status >= 500:
            # RFC 9309 2.3.1.4: an unreachable robots.txt means complete disallow.
            stats.inc_value("sitekb/robots/unreachable")
            body = DISALLOW_ALL
        elif response.status >= 400:
            stats.inc_value("sitekb/robots/missing")  # 2.3.1.3: unavailable → no rules
            body = b""
        else:
            if "download_stopped" in response.flags or len(body) > ROBOTS_MAX_BYTES:
                stats.inc_value("sitekb/robots/huge")
                body = body[:ROBOTS_MAX_BYTES].rsplit(b"\n", 1)[0]  # never half a rule
            if robots_looks_broken(body):
                stats.inc_value("sitekb/robots/broken")
                body = b""
        await super()._parse_robots(response.replace(body=body), netloc, request)
        self._apply_crawl_delay(netloc, request)

    def _robots_error(self, exc: Exception, netloc: str) -> None:
        if isinstance(exc, IgnoreRequest):
            # e.g. robots.txt redirected out of scope: treated as no rules.
            self._stats.inc_value("sitekb/robots/ignored")
            super()._robots_error(exc, netloc)
            return
        self._stats.inc_value("sitekb/robots/unreachable")
        self._stats.set_value("sitekb/error_examples/robots", f"{netloc}: {exc!r}")
        parser = build_from_crawler(self._parserimpl, self.crawler, DISALLOW_ALL)
        deferred = self._parsers[netloc]
        self._parsers[netloc] = parser
        if hasattr(deferred, "callback"):
            deferred.callback(parser)

    def _apply_crawl_delay(self, netloc: str, request: Request) -> None:
        parser = self._parsers.get(netloc)
        if parser is None or not hasattr(parser, "crawl_delay"):
            return
        delay = parser.crawl_delay(self._robotstxt_useragent or self._default_useragent)
        if not delay or delay <= self.base_delay:
            return
        if delay > self.max_crawl_delay:
            self._stats.set_value("sitekb/robots/crawl_delay_asked", float(delay))
            delay = self.max_crawl_delay
        self._stats.set_value("sitekb/robots/crawl_delay", float(delay))
        set_host_delay(self.crawler, urlparse_cached(request).hostname or "", float(delay))

    def parser_for(self, netloc: str):
        """The parsed robots.txt of ``netloc`` (after :meth:`robot_parser` resolved it)."""
        parser = self._parsers.get(netloc)
        return None if parser is None or hasattr(parser, "callback") else parser


# -- retries ---------------------------------------------------------------------------

class PoliteRetryMiddleware:
    """Retries with backoff; 429/503 wait for Retry-After; the wait pauses the host."""

    def __init__(self, *, max_retries: int, http_codes: set[int], exceptions: tuple, backoff: float,
                 max_retry_after: float, crawler=None):
        self.max_retries = max_retries
        self.http_codes = http_codes
        self.exceptions = exceptions
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        if not settings.getbool("RETRY_ENABLED"):
            raise NotConfigured
        exceptions = tuple(
            load_object(x) if isinstance(x, str) else x for x in settings.getlist("RETRY_EXCEPTIONS")
        )
        return cls(
            max_retries=settings.getint("RETRY_TIMES"),
            http_codes={int(x) for x in settings.getlist("RETRY_HTTP_CODES")},
            exceptions=exceptions,
            backoff=settings.getfloat("SITEKB_RETRY_BACKOFF", 0.5),
            max_retry_after=settings.getfloat("SITEKB_MAX_RETRY_AFTER", 120),
            crawler=crawler,
        )

    def process_response(self, request, response, spider=None):
        if request.meta.get("dont_retry") or response.status not in self.http_codes:
            return response
        wait = None
        if response.status in (429, 503):
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None and wait > self.max_retry_after:
                # Waiting that long would stall the crawl: give the URL up, politely.
                self._inc("sitekb/retry_after_too_long")
                return response
        return self._retry(request, f"http_{response.status}", wait) or response

    def process_exception(self, request, exception, spider=None):
        if isinstance(exception, self.exceptions) and not request.meta.get("dont_retry"):
            return self._retry(request, type(exception).__name__, None)
        return None

    def _retry(self, request: Request, reason: str, wait: float | None) -> Request | None:
        attempt = request.meta.get("retry_times", 0)
        if attempt >= request.meta.get("max_retry_times", self.max_retries):
            self._inc("retry/max_reached")
            return None
        if wait is None:
            wait = min(self.backoff * (2 ** attempt), MAX_BACKOFF_SECONDS)
        retry = request.copy()
        retry.meta["retry_times"] = attempt + 1
        retry.meta["sitekb_retry_wait"] = wait
        retry.dont_filter = True
        retry.priority = request.priority - 1
        self._inc("retry/count")
        self._inc(f"retry/reason_count/{reason}")
        if wait > 0 and pause_host(self.crawler, request, wait):
            self._inc("sitekb/retry_wait_seconds", wait)
        return retry

    def _inc(self, key: str, count: float = 1) -> None:
        if self.crawler is not None:
            self.crawler.stats.inc_value(key, count)


# -- sitemap lastmod ---------------------------------------------------------------------

class SitemapUnchangedMiddleware:
    """A synthetic 304 for requests the spider marked unchanged; runs after robots.txt."""

    FLAG = "sitekb-unchanged"

    def process_request(self, request, spider=None):
        if request.meta.get("sitekb_unchanged"):
            return Response(request.url, status=304, request=request, flags=[self.FLAG])
        return None


class RedirectAwareDupeFilter(RFPDupeFilter):
    """Scrapy's duplicate filter, counting the redirects it drops."""

    stats = None

    @classmethod
    def from_crawler(cls, crawler):
        dupefilter = super().from_crawler(crawler)
        dupefilter.stats = crawler.stats
        return dupefilter

    def request_seen(self, request: Request) -> bool:
        seen = super().request_seen(request)
        redirects = request.meta.get("redirect_urls")
        if seen and redirects and self.stats is not None:
            if request.url in redirects:
                self.stats.inc_value("sitekb/errors/redirect_loop")
                self.stats.set_value("sitekb/error_examples/redirect_loop", " -> ".join([*redirects, request.url]))
            else:
                self.stats.inc_value("sitekb/redirected_to_known")
        return seen
