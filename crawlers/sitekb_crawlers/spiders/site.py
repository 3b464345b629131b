"""The site spider: routes requests and hands bodies to the pure parsers.

Discovery: start URLs, configured sitemaps and those named in robots.txt
(sitemap indexes and gzip included), then links inside the scope. Every URL
is normalised before it is requested so one page is one document, and passes
the frontier's limits (pages, depth, trap guards). Before any page, the
site's ``/.well-known/tdmrep.json`` is read: a reserved URL is never fetched.

Depth: a start URL or sitemap entry is depth 0, a link one more than its page.
Scrapy runs ``start()`` interleaved with the responses, so a URL may be reached
first deep through links and later at depth 0 through the sitemap (or by a
shorter link path whose response came later). A URL's depth is its shortest
distance, whatever the order (:mod:`sitekb_crawlers.frontier`): a ``max-depth``
refusal is provisional (written when the crawl ends, voided if the URL is
reached at an allowed depth), and a page found closer after its links were
followed follows them again at the new depth. So a full and an incremental
crawl of an unchanged site keep the same pages.

A page that carries an opt-out signal, points elsewhere with rel=canonical,
is disallowed by robots.txt or falls outside a limit becomes an exclusion
with its rule, and nothing of its content is kept. Sections matching the
site's nosnippet selectors are cut before a page is stored.

Incremental: stored ETag/Last-Modified are sent back; a 304 keeps the stored
page and follows its stored links; a sitemap ``lastmod`` not newer than the
stored fetch skips the request altogether (:class:`SitemapUnchangedMiddleware`
answers it after robots.txt allowed it).

Every oddity (bad charset, binary body, broken markup, sitemap or PDF,
timeouts, redirect loops) is counted in the ``sitekb/*`` stats; none stops
the crawl. What a site supplies is read within bounds: tdmrep.json through
:func:`sitekb.untrusted.load_json` (too large or too deep: ignored, counted),
and at most ``SITEMAP_ENTRIES_PER_PAGE`` sitemap entries per page of
``crawl.max_pages`` (a sitemap flood ends as fast as a small sitemap).

A request that gets no usable answer after its retries (refused, lost, timed
out, DNS, TLS, a 408/429/5xx, a redirect chain given up) becomes a
:class:`FailureItem` with its kind (:mod:`sitekb_crawlers.failures`): the
quality gate counts it as an error, and the stored page is left as it was.
As on a 304, the stored links of a page that failed are followed, so the
pages behind it are tried rather than silently left out.
"""

from __future__ import annotations

from collections import deque
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urljoin, urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import DownloadCancelledError, IgnoreRequest, StopDownload
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.gz import gunzip
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots
from twisted.internet.defer import CancelledError

from sitekb_crawlers import failures, parsers, pdf
from sitekb_crawlers.frontier import CLOSER, MAX_DEPTH, SEEN, Frontier
from sitekb_crawlers.items import ExclusionItem, FailureItem, PageItem, VoidedExclusion
from sitekb.sites import SiteConfig
from sitekb.untrusted import UntrustedJson
from sitekb_crawlers.middlewares import OutOfScope, SitemapUnchangedMiddleware

PDF = "application/pdf"
KEPT_HEADERS = ("content-type", "etag", "last-modified", "x-robots-tag", "content-language", "tdm-reservation",
                "tdm-policy")
SITEMAP_MAX_BYTES = 50 * 1024 * 1024   # the sitemaps.org limit, uncompressed
MAX_SITEMAPS = 1000
# A sitemap flood (a million URLs for a site of a hundred pages) must end quickly: the
# crawl reads at most this many sitemap entries per page it may fetch, and follows
# sitemap indexes this deep (sitemaps.org allows no index inside an index; some nest one).
SITEMAP_ENTRIES_PER_PAGE = 20
MAX_SITEMAP_NESTING = 3
TDMREP_MAX_BYTES = 1024 * 1024
QUIET_SCOPE_RULES = ("off-domain", "scheme")  # not the site's URLs: neither counted nor recorded
RESOLVED_MEMORY = 200_000
STOP_AFTER_HEADERS_BYTES = 256 * 1024


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, *args: Any, site: SiteConfig, known: dict[str, dict] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # The site config, validated once by the crawl's entry point (sitekb_crawlers.run).
        self.site = site
        # url -> {"etag", "last_modified", "links", "fetched_at"} of pages stored by earlier crawls
        self.known = known or {}

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any):
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        site = spider.site
        spider.scope = parsers.Scope.of(site)
        spider.frontier = Frontier.from_site(site)
        spider.agent = parsers.agent_token(site.crawl.identity)
        spider.full = settings.getbool("SITEKB_FULL_CRAWL")
        spider.use_lastmod = settings.getbool("SITEKB_USE_LASTMOD")
        spider.accepted = {t for t in site.crawl.content_types if t != PDF or pdf.available()}
        spider.nosnippet = tuple(site.opt_out.nosnippet_selectors)
        spider.tdm_rules: dict[str, list[parsers.TdmRule]] = {}
        spider.sitemaps_seen: set[str] = set()
        spider.sitemap_entries_left = SITEMAP_ENTRIES_PER_PAGE * site.crawl.max_pages
        spider.lastmods: dict[str, str] = {}   # normalised URL -> sitemap lastmod
        spider._resolved: dict[str, tuple[str, str | None]] = {}
        # Still one of these after the retries: the page is unavailable, not gone.
        spider.transient_statuses = {int(code) for code in settings.getlist("RETRY_HTTP_CODES")}
        spider.sitemap_failures: list[FailureItem] = []
        crawler.signals.connect(spider.on_headers, signal=signals.headers_received)
        return spider

    def closed(self, reason: str) -> None:
        if self.frontier.links_forgotten:
            # Pages whose links did not fit the frontier's memory: a shorter path found to one of
            # them later could not carry on down, so this crawl's pages may depend on order.
            self.crawler.stats.set_value("sitekb/depth_links_forgotten", self.frontier.links_forgotten)

    # -- helpers ------------------------------------------------------------

    def inc(self, key: str, count: int = 1) -> None:
        self.crawler.stats.inc_value(f"sitekb/{key}", count)

    def example(self, kind: str, text: str) -> None:
        self.crawler.stats.set_value(f"sitekb/error_examples/{kind}", text[:500])

    def resolve(self, url: str) -> tuple[str, str | None]:
        """(normalised URL, the scope rule that keeps it out or None); ValueError for a broken URL."""
        # Sites link the same URLs from every page: remember the answers (bounded).
        known = self._resolved.get(url)
        if known is None:
            crawl = self.site.crawl
            normal = parsers.normalize_url(url, crawl.strip_query_params, crawl.sort_query_params)
            known = (normal, self.scope.why_out(normal))
            if len(self._resolved) < RESOLVED_MEMORY:
                self._resolved[url] = known
        return known

    def normalize(self, url: str) -> str:
        return self.resolve(url)[0]

    def origins(self) -> list[str]:
        return list(dict.fromkeys(f"{p.scheme}://{p.netloc}" for p in map(urlsplit, self.site.start_urls)))

    # -- start ----------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        # Reservations first: a reserved URL must never be requested.
        for origin in self.origins():
            await self.load_tdmrep(origin)
        sitemaps = [self.site.absolute(url) for url in self.site.crawl.sitemaps]
        sitemaps += await self.robots_sitemaps()
        # All sitemaps are read before the first page is requested: a page's lastmod
        # must be known before a link to it (from an unchanged page) schedules it.
        entries: list[str] = []
        for url in dict.fromkeys(sitemaps):
            async for loc, lastmod in self.walk_sitemap(url):
                try:
                    loc = self.normalize(loc)
                except ValueError:
                    continue
                entries.append(loc)
                if lastmod:
                    self.lastmods[loc] = lastmod
        for failed in self.sitemap_failures:
            self.inc("failed_fetches")
            yield failed
        for url in [*self.site.start_urls, *entries]:
            for out in self.schedule(url, depth=0):
                yield out

    async def download(self, url: str, **meta: Any) -> Response:
        request = scrapy.Request(url, callback=NO_CALLBACK, dont_filter=True, meta=meta)
        return await self.crawler.engine.download_async(request)

    async def load_tdmrep(self, origin: str) -> None:
        try:
            response = await self.download(f"{origin}/.well-known/tdmrep.json", dont_obey_robotstxt=True,
                                           download_maxsize=TDMREP_MAX_BYTES)
        except Exception as exc:  # noqa: BLE001 - any failure: no rules known, counted
            self.inc("tdmrep/unreachable")
            self.example("tdmrep", f"{origin}: {exc!r}")
            return
        if response.status != 200:
            return  # no tdmrep.json: the common case
        try:
            rules = parsers.parse_tdmrep(response.body)
        except UntrustedJson as exc:  # too large or too deep: ignored, as a broken file is
            self.inc(f"bad_input/tdmrep_{exc.reason}")
            self.example("tdmrep", f"{origin}: {exc}")
            return
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self.inc("bad_input/tdmrep_broken")
            self.example("tdmrep", f"{origin}: {exc}")
            return
        self.tdm_rules[origin] = rules
        self.crawler.stats.set_value("sitekb/tdmrep/rules", len(rules))

    def tdm_reservation(self, url: str) -> parsers.TdmRule | None:
        parts = urlsplit(url)
        rule = parsers.tdm_rule_for(self.tdm_rules.get(f"{parts.scheme}://{parts.netloc}", []), url)
        return rule if rule is not None and rule.reserved else None

    async def robots_sitemaps(self) -> list[str]:
        """Sitemap lines of robots.txt, read through the robots middleware (one fetch per host).

        A relative line (``Sitemap: /sitemap.xml``) is resolved against the robots.txt URL.
        """
        found: list[str] = []
        robots = getattr(self.crawler, "sitekb_robots", None)
        for origin in self.origins():
            if robots is not None:
                parser = await robots.robot_parser(scrapy.Request(origin + "/"))
                lines = getattr(getattr(parser, "rp", None), "sitemaps", None) or []
                found += [urljoin(origin + "/robots.txt", line.strip()) for line in lines]
                continue
            try:  # robots.txt not obeyed: still read its Sitemap lines
                response = await self.download(origin + "/robots.txt", dont_obey_robotstxt=True)
            except Exception:  # noqa: BLE001 - no robots.txt, no sitemaps from it
                continue
            if response.status == 200:
                found += list(sitemap_urls_from_robots(response.body, base_url=response.url))
        return found

    async def walk_sitemap(self, url: str, nesting: int = 0) -> AsyncIterator[tuple[str, str | None]]:
        """(page URL, lastmod) of a sitemap, following sitemap indexes (each sitemap read once).

        Bounded: at most ``SITEMAP_ENTRIES_PER_PAGE * max_pages`` entries in all,
        ``MAX_SITEMAPS`` sitemaps and ``MAX_SITEMAP_NESTING`` levels of indexes;
        a sitemap cut short is counted (``sitekb/sitemaps_truncated``).
        """
        if url in self.sitemaps_seen or self.sitemap_entries_left <= 0:
            return
        if len(self.sitemaps_seen) >= MAX_SITEMAPS or nesting > MAX_SITEMAP_NESTING:
            self.inc("skipped/sitemap-limit")
            return
        self.sitemaps_seen.add(url)
        if self.scope.why_out(url) is not None:
            self.inc("skipped/sitemap-out-of-scope")
            return
        try:
            response = await self.download(url, download_maxsize=SITEMAP_MAX_BYTES)
        except IgnoreRequest as exc:
            self.inc("errors/sitemap_ignored")
            self.example("sitemap", f"{url}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a dead sitemap must not stop the crawl
            self.inc("errors/sitemap")
            self.example("sitemap", f"{url}: {exc!r}")
            # Its pages are not discovered this run: counted as a failed fetch, not a quiet removal.
            self.sitemap_failures.append(FailureItem(url=url, kind=failures.kind_of(exc),
                                                     detail=f"sitemap: {exc!r}"[:500]))
            return
        self.inc("sitemaps")
        if response.status != 200:
            self.inc(f"errors/sitemap_http_{response.status}")
            if response.status in self.transient_statuses:
                self.sitemap_failures.append(FailureItem(url=url, kind=failures.kind_of_status(response.status),
                                                         detail=f"sitemap: HTTP {response.status} after retries"))
            return
        sitemap = self.read_sitemap(response)
        if sitemap is None:
            return
        for entry in sitemap:
            loc = (entry.get("loc") or "").strip()
            if not loc:
                continue
            if sitemap.type == "sitemapindex":
                async for out in self.walk_sitemap(loc, nesting + 1):
                    yield out
            elif self.sitemap_entries_left > 0:
                self.sitemap_entries_left -= 1
                yield loc, entry.get("lastmod")
            else:  # the entry budget is spent: the rest of this sitemap is not read
                self.inc("sitemaps_truncated")
                break

    def read_sitemap(self, response: Response) -> Sitemap | None:
        body = response.body
        if body[:2] == b"\x1f\x8b":
            try:
                body = gunzip(body, max_size=SITEMAP_MAX_BYTES)
            except (OSError, ValueError) as exc:
                self.inc("bad_input/sitemap_broken")
                self.example("sitemap", f"{response.url}: {exc}")
                return None
        try:
            sitemap = Sitemap(body)
        except Exception as exc:  # noqa: BLE001 - lxml raises several types on broken XML
            self.inc("bad_input/sitemap_broken")
            self.example("sitemap", f"{response.url}: {exc!r}")
            return None
        if sitemap.type not in ("urlset", "sitemapindex"):
            self.inc("bad_input/sitemap_broken")
            return None
        return sitemap

    # -- scheduling --------------------------------------------------------------

    def schedule(self, url: str, depth: int) -> Iterator[Any]:
        """The request for ``url``, or the exclusion that keeps it out (each reported once)."""
        yield from self.schedule_all([(url, depth)])

    def schedule_all(self, pending: list[tuple[str, int]]) -> Iterator[Any]:
        """Requests and exclusions for (URL, depth) pairs, in order; a URL now found closer than
        before has the links of its page followed again at the new depth (a worklist, not recursion)."""
        queue = deque(pending)
        while queue:
            url, depth = queue.popleft()
            yield from self.schedule_one(url, depth, queue)

    def schedule_one(self, url: str, depth: int, queue: deque[tuple[str, int]]) -> Iterator[Any]:
        try:
            url, rule = self.resolve(url)
        except ValueError:
            self.inc("bad_input/bad_url")
            return
        if rule in QUIET_SCOPE_RULES:
            return
        if rule is not None:
            if self.frontier.refuse(url, rule):
                yield from self.exclude_unfetched(url, rule, f"{rule} (site config crawl section)")
            return
        reserved = self.tdm_reservation(url)
        if reserved is not None:
            if self.frontier.refuse(url, "tdm-reservation"):
                policy = f", policy {reserved.policy}" if reserved.policy else ""
                yield from self.exclude_unfetched(
                    url, "tdm-reservation", f"/.well-known/tdmrep.json location {reserved.location}{policy}",
                    purge=True,
                )
            return
        was_too_deep = url in self.frontier.too_deep
        refusal = self.frontier.admit(url, depth)
        if refusal == SEEN:
            return
        if refusal == CLOSER:
            self.inc("depth_shortened")
            queue.extend(self.frontier.follow_again(url))
            return
        if was_too_deep and url not in self.frontier.too_deep:
            # Reached at an allowed depth after all: the earlier max-depth refusal no longer holds.
            self.inc(f"skipped/{MAX_DEPTH}", -1)
            yield VoidedExclusion(url=url, rule=MAX_DEPTH)
        if refusal is not None:
            self.inc(f"skipped/{refusal}")
            yield ExclusionItem(url=url, rule=refusal, detail=f"limit reached at depth {depth}",
                                provisional=refusal == MAX_DEPTH)
            return
        headers = {}
        meta: dict[str, Any] = {"handle_httpstatus_list": [304], "sitekb_url": url, "sitekb_depth": depth}
        previous = {} if self.full else (self.known.get(url) or {})
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("last_modified"):
            headers["If-Modified-Since"] = previous["last_modified"]
        lastmod = self.lastmods.get(url)
        if self.use_lastmod and lastmod and parsers.unchanged_since(lastmod, previous.get("fetched_at")):
            meta["sitekb_unchanged"] = True
        yield scrapy.Request(url, callback=self.parse_page, errback=self.page_failed, headers=headers, meta=meta,
                             priority=-depth)

    def depth_of(self, keys: tuple[str, ...], default: int) -> int:
        """The shortest depth the page is known at, under its request URL or where it redirected to."""
        depths = [d for d in map(self.frontier.depth_of, keys) if d is not None]
        return min(depths, default=default)

    def follow(self, keys: tuple[str, ...], links: list[str], depth: int, step: int = 1) -> Iterator[Any]:
        """Schedule the links of the page known under ``keys`` (``step`` 0: its canonical URL).

        The frontier remembers them, so a shorter path to the page found later
        follows them again at the new depth.
        """
        if step and not self.site.crawl.follow_links:
            return
        depths = [d for key in dict.fromkeys(keys) if (d := self.frontier.expand(key, links, step)) is not None]
        at = min(depths, default=depth + step)
        yield from self.schedule_all([(link, at) for link in links])

    def on_headers(self, headers, body_length, request, spider=None):
        # An image or a zip served under a page URL: stop after the headers, not after 5 MB.
        # A small body is read anyway: dropping a keep-alive connection costs more, and
        # a request racing onto the closing connection would be sent twice.
        if "sitekb_url" not in request.meta or 0 <= body_length <= STOP_AFTER_HEADERS_BYTES:
            return
        media = parsers.media_type((headers.get(b"Content-Type") or b"").decode("latin-1"))
        if media and media not in self.accepted:
            raise StopDownload(fail=False)

    # -- pages ---------------------------------------------------------------------

    def parse_page(self, response: Response):
        url = response.meta.get("sitekb_url") or self.normalize(response.url)
        final_url = self.normalize(response.url)
        # Not the depth the request was made at: a shorter path may have turned up since.
        keys = (url, final_url)
        depth = self.depth_of(keys, response.meta.get("sitekb_depth", 0))
        headers = {
            key: response.headers.get(key).decode("latin-1")
            for key in KEPT_HEADERS
            if response.headers.get(key) is not None
        }
        if response.status == 304:
            yield from self.not_modified(response, url, depth, headers)
            return
        common = dict(url=final_url, final_url=final_url, status=response.status,
                      content_type=headers.get("content-type"), etag=headers.get("etag"),
                      last_modified=headers.get("last-modified"), headers=headers, depth=depth)
        if final_url != url:
            self.inc("redirected")
            reserved = self.tdm_reservation(final_url)
            if reserved is not None:
                yield from self.exclude(common, "tdm-reservation", f"tdmrep.json location {reserved.location}",
                                        purge=True)
                return
        media = parsers.media_type(headers.get("content-type"))
        if not media:
            media = PDF if response.body[:5] == b"%PDF-" else "text/html"
        if media not in self.accepted:
            yield from self.skip(common, "content-type", media)
            return
        if media == PDF:
            yield from self.parse_pdf(response, common)
        else:
            yield from self.parse_html(response, common, keys, depth)

    def parse_html(self, response: Response, common: dict, keys: tuple[str, ...], depth: int):
        data = response.body
        if parsers.looks_binary(data):
            self.inc("bad_input/binary_body")
            yield from self.skip(common, "not-text", f"binary body served as {common['content_type']}")
            return
        text, problem = parsers.decode_html(data, common["content_type"])
        if problem:
            self.inc(f"bad_input/{problem}")
        facts = parsers.read_page(text, response.url, self.agent)
        if not facts.parsed:
            self.inc("bad_input/unparseable")
            yield from self.skip(common, "unparseable", "no HTML could be parsed")
            return
        if facts.malformed:
            self.inc("bad_input/malformed_html")
        self.inc("fetched")
        lowered = {k.lower(): v for k, v in common["headers"].items()}
        lowered_text = text.lower()
        signal = parsers.opt_out(text, lowered, self.site, facts, self.agent, lowered_text)
        if signal is not None:
            yield from self.exclude(common, signal.rule, signal.detail, purge=signal.rule in parsers.CONSENT_RULES)
            return
        if facts.canonical:
            canonical = self.normalize(facts.canonical)
            if canonical != common["final_url"] and self.scope.why_out(canonical) is None:
                yield from self.exclude(common, "canonical", f"canonical is {canonical}")
                yield from self.follow(keys, [canonical], depth, step=0)   # the same page: the same depth
                return
        body = self.cut_nosnippet(text, lowered_text)
        links = []
        for href in facts.links:
            try:
                link, rule = self.resolve(href)
            except ValueError:
                continue
            if rule not in QUIET_SCOPE_RULES:
                links.append(link)
        links = list(dict.fromkeys(links))
        nofollow = bool({"nofollow", "none"} & (facts.robots | parsers.robots_directives(
            lowered.get("x-robots-tag"), self.agent)))
        if nofollow:
            self.inc("nofollow_pages")
        yield PageItem(**common, body=body, links=[] if nofollow else links)
        if not nofollow:
            yield from self.follow(keys, links, depth)

    def cut_nosnippet(self, text: str, lowered: str) -> str:
        if not self.nosnippet:
            return text
        # Only the default attribute selector can be ruled out without parsing.
        only_attribute = all(s.startswith("[data-nosnippet") for s in self.nosnippet)
        if only_attribute and "data-nosnippet" not in lowered:
            return text
        from sitekb.extract import strip_nosnippet

        cut = strip_nosnippet(text, self.nosnippet)
        if cut != text:
            self.inc("nosnippet_pages")
        return cut

    def parse_pdf(self, response: Response, common: dict):
        try:
            document = pdf.pdf_text(response.body)
        except pdf.PdfUnreadable as exc:
            self.inc("bad_input/pdf_unreadable")
            yield from self.skip(common, "unreadable-pdf", str(exc))
            return
        self.inc("fetched")
        self.inc("fetched_pdf")
        if document.tdm_reservation == "1":
            yield from self.exclude(common, "tdm-reservation", "PDF metadata tdm-reservation=1", purge=True)
            return
        text = document.as_markdown()
        lowered = {k.lower(): v for k, v in common["headers"].items()}
        signal = parsers.opt_out(text, lowered, self.site, None, self.agent)
        if signal is not None:
            yield from self.exclude(common, signal.rule, signal.detail, purge=signal.rule in parsers.CONSENT_RULES)
            return
        if not document.text.strip():
            yield from self.skip(common, "no-text", f"PDF of {document.pages} pages without text (scanned?)")
            return
        yield PageItem(**{**common, "content_type": PDF}, body=text)

    def not_modified(self, response: Response, url: str, depth: int, headers: dict):
        unchanged = SitemapUnchangedMiddleware.FLAG in response.flags
        signal = parsers.header_opt_out({k.lower(): v for k, v in headers.items()}, self.site, self.agent)
        if signal is not None:  # same body, but the owner has since opted out in a header
            common = dict(url=url, final_url=url, status=response.status, headers=headers, depth=depth)
            yield from self.exclude(common, signal.rule, signal.detail, purge=True)
            return
        self.inc("not_modified")
        if unchanged:
            self.inc("unchanged_by_sitemap")
        yield PageItem(url=url, final_url=url, status=304, not_modified=True, unchanged_by_sitemap=unchanged,
                       depth=depth)
        # The body is unchanged, so are its links: follow the ones stored last time.
        yield from self.follow((url,), self.known.get(url, {}).get("links") or [], depth)

    # -- outcomes ----------------------------------------------------------------------

    def exclude(self, common: dict, rule: str, detail: str, purge: bool = False):
        self.inc(f"excluded/{rule}")
        yield PageItem(**common, excluded_rule=rule)
        yield ExclusionItem(url=common["url"], rule=rule, detail=detail, purge=purge)

    def exclude_unfetched(self, url: str, rule: str, detail: str, purge: bool = False):
        self.inc(f"excluded/{rule}")
        yield ExclusionItem(url=url, rule=rule, detail=detail, purge=purge)

    def skip(self, common: dict, rule: str, detail: str):
        self.inc(f"skipped/{rule}")
        yield PageItem(**common, excluded_rule=rule)
        yield ExclusionItem(url=common["url"], rule=rule, detail=detail)

    def page_failed(self, failure):
        request = failure.request
        url = request.meta.get("sitekb_url", request.url)
        depth = self.depth_of((url,), request.meta.get("sitekb_depth", 0))
        if failure.check(HttpError):
            status = failure.value.response.status
            self.inc(f"errors/http_{status}")
            if status in self.transient_statuses:
                yield from self.fetch_failed(url, depth, failures.kind_of_status(status),
                                             f"HTTP {status} after the retries")
                return
            # 404/410: the page is gone; its row loses the body and drops out of the snapshot.
            yield PageItem(url=url, status=status, depth=depth)
        elif failure.check(OutOfScope):
            # A redirect that leaves the scope, or a host that resolves to a private address.
            rule = failure.value.rule
            self.inc(f"excluded/{rule}")
            yield ExclusionItem(url=url, rule=rule, detail=f"redirected or resolved out of scope: {failure.value}")
        elif failure.check(IgnoreRequest):
            reason = str(failure.value) or "ignored"
            if "robots" in reason.lower():
                self.inc("excluded/robots-txt")
                yield ExclusionItem(url=url, rule="robots-txt", detail=reason, purge=True)
            elif "redirection" in reason.lower():
                self.inc("errors/redirect_limit")
                self.example("redirect_limit", f"{url}: {reason}")
                yield from self.fetch_failed(url, depth, "redirect_limit", reason)
            else:
                self.inc("excluded/ignored")
                yield ExclusionItem(url=url, rule="ignored", detail=reason)
        elif failure.check(DownloadCancelledError, CancelledError):
            self.inc("skipped/too-large")
            yield ExclusionItem(url=url, rule="too-large",
                                detail=f"larger than crawl.max_page_bytes ({self.site.crawl.max_page_bytes})")
        else:
            # Refused, lost, timed out, DNS, TLS: no answer at all after the retries.
            kind = failures.kind_of(failure.value)
            self.inc(f"errors/{kind}")
            self.example(kind, f"{url}: {failure.getErrorMessage()}")
            yield from self.fetch_failed(url, depth, kind, failure.getErrorMessage())

    def fetch_failed(self, url: str, depth: int, kind: str, detail: str):
        """A request with no usable answer: recorded for the gate; the stored page and its links stand."""
        self.inc("failed_fetches")
        yield FailureItem(url=url, kind=kind, detail=detail[:500])
        # Unreached is not unchanged, but it is not gone either: as on a 304, the stored
        # links are followed, so the pages behind this one are tried (and fail or not) on
        # their own instead of vanishing from the snapshot uncounted.
        yield from self.follow((url,), self.known.get(url, {}).get("links") or [], depth)
