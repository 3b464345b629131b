"""The crawl frontier's limits: which discovered URL may still be requested.

Pure bookkeeping, no Scrapy: every URL the spider wants to request passes
:meth:`Frontier.admit`, which enforces the page budget, the depth limit and
the spider-trap guards: too long URLs, path segments repeated by relative-link
loops (/a/b/a/b/a/b), and endless query permutations of one path (facets,
calendars: at most ``max_query_variants`` distinct query strings per path).
Session ids are handled earlier, by URL normalisation.

Settings read (via the site config): crawl.max_pages, max_depth,
max_query_variants, max_url_length, max_segment_repeats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SEEN = "seen"
REFUSED_MEMORY = 50_000  # refusals remembered (so each is reported once) before counting only


@dataclass
class Frontier:
    max_pages: int
    max_depth: int
    max_query_variants: int = 25
    max_url_length: int = 2000
    max_segment_repeats: int = 3
    scheduled: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    _variants: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_site(cls, site) -> "Frontier":
        crawl = site.crawl
        return cls(max_pages=crawl.max_pages, max_depth=crawl.max_depth,
                   max_query_variants=crawl.max_query_variants, max_url_length=crawl.max_url_length,
                   max_segment_repeats=crawl.max_segment_repeats)

    def admit(self, url: str, depth: int) -> str | None:
        """None and the URL is scheduled; else the rule that refuses it (``SEEN`` for a repeat).

        A URL refused before is answered with ``SEEN`` too, so each refusal is
        reported once.
        """
        if url in self.scheduled or url in self.refused:
            return SEEN
        rule = self._why_refused(url, depth)
        if rule is None:
            self.scheduled.add(url)
            parts = urlsplit(url)
            if parts.query:
                self._variants.setdefault(self._path_key(parts), set()).add(parts.query)
        elif len(self.refused) < REFUSED_MEMORY:
            self.refused[url] = rule
        return rule

    def refuse(self, url: str, rule: str) -> bool:
        """Record a refusal decided elsewhere (scope, reservation); True the first time."""
        if url in self.refused or url in self.scheduled:
            return False
        if len(self.refused) < REFUSED_MEMORY:
            self.refused[url] = rule
        return True

    def _why_refused(self, url: str, depth: int) -> str | None:
        if len(url) > self.max_url_length:
            return "url-too-long"
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        if segments and max(Counter(segments).values()) > self.max_segment_repeats:
            return "repeated-segments"
        if depth > self.max_depth:
            return "max-depth"
        if parts.query:
            seen = self._variants.get(self._path_key(parts), ())
            if parts.query not in seen and len(seen) >= self.max_query_variants:
                return "query-variants"
        if len(self.scheduled) >= self.max_pages:
            return "max-pages"
        return None

    @staticmethod
    def _path_key(parts) -> str:
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
