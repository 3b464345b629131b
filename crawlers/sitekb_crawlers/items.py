"""Items the spider yields: a fetched page, an exclusion with its reason (or one taken back), or a fetch that failed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PageItem:
    url: str
    status: int
    final_url: str | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body: str | None = None          # None for excluded, failed and 304 pages
    headers: dict = field(default_factory=dict)
    depth: int = 0
    not_modified: bool = False       # a 304, or unchanged by its sitemap lastmod: the stored body stays
    unchanged_by_sitemap: bool = False  # not requested at all: the stored fetch time stays too
    excluded_rule: str | None = None
    links: list[str] = field(default_factory=list)


@dataclass
class ExclusionItem:
    url: str
    rule: str
    detail: str = ""
    # The owner withdrew consent (robots.txt, opt-out): stored content of the
    # URL is erased, not just left out of this run.
    purge: bool = False
    # May still be taken back in this crawl (a max-depth refusal, until the URL is
    # reached at an allowed depth): written when the crawl ends, unless voided.
    provisional: bool = False


@dataclass
class VoidedExclusion:
    """A provisional exclusion that no longer holds: the URL was reached at an allowed depth."""

    url: str
    rule: str


@dataclass
class FailureItem:
    """A request that got no usable answer after its retries: counted as an error, the stored page kept."""

    url: str
    kind: str        # sitekb_crawlers.failures.kind_of: connection_refused, timeout, http_503, ...
    detail: str = ""
