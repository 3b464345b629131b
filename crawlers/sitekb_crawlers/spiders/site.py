"""The site spider: routes requests and hands bodies to the pure parsers.

Discovery: start URLs, configured sitemaps and those named in robots.txt
(sitemap indexes and gzip included), then links inside the scope. Every URL
is normalised before it is requested so one page is one document. Pages that
carry an opt-out signal, point elsewhere with rel=canonical or are disallowed
by robots.txt become exclusions with their rule; nothing of their content is
kept.
"""

from __future__ import annotations

from typing import Any, AsyncIterator
from urllib.parse import urljoin

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.gz import gunzip
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots

from sitekb_crawlers import parsers
from sitekb_crawlers.items import ExclusionItem, PageItem
from sitekb_crawlers.middlewares import OutOfScope
from sitekb_crawlers.settings import site_from_settings

HTML_TYPES = ("text/html", "application/xhtml+xml")
KEPT_HEADERS = ("content-type", "etag", "last-modified", "x-robots-tag", "content-language", "tdm-reservation")


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, *args: Any, known: dict[str, dict] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # url -> {"etag": ..., "last_modified": ...} from the previous crawl
        self.known = known or {}
        self.scheduled: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.site = site_from_settings(crawler.settings)
        spider.scope = parsers.Scope(spider.site)
        spider.strip_params = spider.site.crawl.strip_query_params
        spider.max_pages = spider.site.crawl.max_pages
        spider.allowed_domains = spider.site.domains()
        return spider

    async def start(self) -> AsyncIterator[Any]:
        sitemaps = list(self.site.crawl.sitemaps)
        robots = urljoin(self.site.base_url + "/", "/robots.txt")
        yield scrapy.Request(robots, callback=self.parse_robots, errback=self.ignore_failure, dont_filter=True,
                             meta={"dont_obey_robotstxt": True, "handle_httpstatus_all": True})
        for url in sitemaps:
            yield scrapy.Request(self.site.absolute(url), callback=self.parse_sitemap, errback=self.ignore_failure)
        for url in self.site.start_urls:
            request = self.page_request(url)
            if request is not None:
                yield request

    # -- requests ---------------------------------------------------------

    def page_request(self, url: str, depth: int | None = None) -> scrapy.Request | None:
        url = parsers.normalize_url(url, self.strip_params)
        if url in self.scheduled:
            return None
        rule = self.scope.why_out(url)
        if rule is not None:
            if rule != "off-domain":
                self.crawler.stats.inc_value(f"sitekb/excluded/{rule}")
            return None
        if len(self.scheduled) >= self.max_pages:
            self.crawler.stats.inc_value("sitekb/skipped/max_pages")
            return None
        self.scheduled.add(url)
        headers = {}
        previous = self.known.get(url) or {}
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("last_modified"):
            headers["If-Modified-Since"] = previous["last_modified"]
        meta = {"handle_httpstatus_list": [304], "sitekb_url": url}
        if depth is not None:
            meta["depth"] = depth
        return scrapy.Request(url, callback=self.parse_page, errback=self.page_failed, headers=headers, meta=meta)

    # -- discovery --------------------------------------------------------

    def parse_robots(self, response: Response):
        if response.status != 200:
            return
        for url in sitemap_urls_from_robots(response.body, base_url=response.url):
            yield scrapy.Request(url, callback=self.parse_sitemap, errback=self.ignore_failure)

    def parse_sitemap(self, response: Response):
        body = response.body
        if response.url.endswith(".gz") or body[:2] == b"\x1f\x8b":
            try:
                body = gunzip(body, max_size=self.site.crawl.max_page_bytes * 10)
            except OSError:
                self.crawler.stats.inc_value("sitekb/errors/bad_sitemap")
                return
        try:
            sitemap = Sitemap(body)
        except Exception:  # lxml raises several types on broken XML
            self.crawler.stats.inc_value("sitekb/errors/bad_sitemap")
            return
        for entry in sitemap:
            loc = entry.get("loc")
            if not loc:
                continue
            if sitemap.type == "sitemapindex":
                yield scrapy.Request(loc, callback=self.parse_sitemap, errback=self.ignore_failure)
            else:
                request = self.page_request(loc, depth=0)
                if request is not None:
                    yield request

    # -- pages ------------------------------------------------------------

    def parse_page(self, response: Response):
        url = response.meta.get("sitekb_url") or parsers.normalize_url(response.url, self.strip_params)
        final_url = parsers.normalize_url(response.url, self.strip_params)
        headers = {
            key: response.headers.get(key).decode("latin-1")
            for key in KEPT_HEADERS
            if response.headers.get(key) is not None
        }
        common = dict(
            url=final_url,
            final_url=final_url,
            status=response.status,
            content_type=headers.get("content-type"),
            etag=headers.get("etag"),
            last_modified=headers.get("last-modified"),
            headers=headers,
            depth=response.meta.get("depth", 0),
        )
        if final_url != url:
            self.crawler.stats.inc_value("sitekb/redirected")
        if response.status == 304:
            self.crawler.stats.inc_value("sitekb/not_modified")
            yield PageItem(**{**common, "url": url, "final_url": url}, not_modified=True)
            # The body is unchanged, so are its links: follow the ones stored last time.
            yield from self.follow(self.known.get(url, {}).get("links") or [])
            return
        content_type = (headers.get("content-type") or "text/html").split(";")[0].strip().lower()
        if content_type not in HTML_TYPES or not isinstance(response, TextResponse):
            yield from self.exclude(common, "content-type", content_type)
            return
        try:
            body = response.text
        except (UnicodeDecodeError, AttributeError):
            yield from self.exclude(common, "undecodable", "body could not be decoded")
            return
        self.crawler.stats.inc_value("sitekb/fetched")
        canonical = parsers.canonical_url(body, response.url)
        if canonical:
            canonical = parsers.normalize_url(canonical, self.strip_params)
            if canonical != final_url and self.scope.why_out(canonical) is None:
                yield from self.exclude(common, "canonical", f"canonical is {canonical}")
                request = self.page_request(canonical, depth=response.meta.get("depth", 0))
                if request is not None:
                    yield request
                return
        signal = parsers.opt_out(body, {k.lower(): v for k, v in headers.items()}, self.site)
        if signal is not None:
            yield from self.exclude(common, signal.rule, signal.detail)
            return
        links = [parsers.normalize_url(link, self.strip_params) for link in parsers.links(body, response.url)]
        links = [link for link in dict.fromkeys(links) if self.scope.why_out(link) != "off-domain"]
        yield PageItem(**common, body=body, links=links)
        yield from self.follow(links)

    def follow(self, links: list[str]):
        if not self.site.crawl.follow_links:
            return
        for link in links:
            request = self.page_request(link)
            if request is not None:
                yield request

    def exclude(self, common: dict, rule: str, detail: str):
        self.crawler.stats.inc_value(f"sitekb/excluded/{rule}")
        yield PageItem(**common, excluded_rule=rule)
        yield ExclusionItem(url=common["url"], rule=rule, detail=detail)

    def page_failed(self, failure):
        request = failure.request
        url = request.meta.get("sitekb_url", request.url)
        if failure.check(HttpError):
            status = failure.value.response.status
            self.crawler.stats.inc_value(f"sitekb/errors/http_{status}")
            yield PageItem(url=url, status=status, depth=request.meta.get("depth", 0))
        elif failure.check(OutOfScope):
            # A redirect that leaves the scope, or a host that resolves to a private address.
            self.crawler.stats.inc_value(f"sitekb/excluded/{failure.value.rule}")
            yield ExclusionItem(url=url, rule=failure.value.rule, detail=str(failure.value))
        elif failure.check(IgnoreRequest):
            reason = str(failure.value) or "ignored"
            rule = "robots-txt" if "robots" in reason.lower() else "ignored"
            self.crawler.stats.inc_value(f"sitekb/excluded/{rule}")
            yield ExclusionItem(url=url, rule=rule, detail=reason)
        else:
            kind = failure.type.__name__ if failure.type else "error"
            self.crawler.stats.inc_value(f"sitekb/errors/{kind}")
            self.crawler.stats.set_value(f"sitekb/error_examples/{kind}", f"{url}: {failure.getErrorMessage()}")

    def ignore_failure(self, failure):
        self.crawler.stats.inc_value("sitekb/errors/discovery")
