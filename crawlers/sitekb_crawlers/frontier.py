"""The crawl frontier's limits: which discovered URL may still be requested, and at what depth.

Pure bookkeeping, no Scrapy: every URL the spider wants to request passes
:meth:`Frontier.admit`, which enforces the page budget, the depth limit and
the spider-trap guards: too long URLs, path segments repeated by relative-link
loops (/a/b/a/b/a/b), and endless query permutations of one path (facets,
calendars: at most ``max_query_variants`` distinct query strings per path).
Session ids are handled earlier, by URL normalisation.

The depth of a URL is its shortest distance from any start (a start URL or a
sitemap entry, both depth 0), whatever order requests finish in: Scrapy runs
the spider's ``start()`` interleaved with the responses, so the links of a
page can reach a URL deep before the sitemap names it, and responses arrive
in any order. So a depth refusal is provisional (:attr:`Frontier.too_deep`):
the URL is admitted when it is reached again at an allowed depth. A URL
reached closer than before is answered :data:`CLOSER`, and
:meth:`Frontier.follow_again` gives the links of its page (remembered by
:meth:`Frontier.expand`) at the new depth, so the shorter path carries on
down. A full and an incremental crawl of one site thus keep the same pages.

Settings read (via the site config): crawl.max_pages, max_depth,
max_query_variants, max_url_length, max_segment_repeats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SEEN = "seen"
CLOSER = "closer"   # scheduled already, now reached at a smaller depth
MAX_DEPTH = "max-depth"
REFUSED_MEMORY = 50_000  # refusals remembered (so each is reported once) before counting only
# Links of expanded pages kept to follow again when a shorter path to the page turns up:
# pointers to strings the spider holds anyway, ~8 bytes a link.
LINK_MEMORY = 5_000_000


@dataclass
class Frontier:
    max_pages: int
    max_depth: int
    max_query_variants: int = 25
    max_url_length: int = 2000
    max_segment_repeats: int = 3
    scheduled: dict[str, int] = field(default_factory=dict)    # admitted URL -> shortest depth known
    refused: dict[str, str] = field(default_factory=dict)      # URL -> rule, for good
    too_deep: set[str] = field(default_factory=set)            # refused as max-depth, until reached closer
    links_forgotten: int = 0                                    # pages whose links LINK_MEMORY could not hold
    _variants: dict[str, set[str]] = field(default_factory=dict)
    _followed: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    _links_held: int = 0

    @classmethod
    def from_site(cls, site) -> "Frontier":
        crawl = site.crawl
        return cls(max_pages=crawl.max_pages, max_depth=crawl.max_depth,
                   max_query_variants=crawl.max_query_variants, max_url_length=crawl.max_url_length,
                   max_segment_repeats=crawl.max_segment_repeats)

    def admit(self, url: str, depth: int) -> str | None:
        """None and the URL is scheduled; :data:`CLOSER` when it was scheduled at a greater depth
        (its new depth is recorded); ``SEEN`` when nothing changes; else the rule that refuses it.

        A URL refused before is answered with ``SEEN``, so each refusal is
        reported once; only a ``max-depth`` refusal is taken back, when the URL
        is reached at an allowed depth (it is then admitted, or refused by
        another rule, and leaves :attr:`too_deep`).
        """
        if url in self.refused:
            return SEEN
        known = self.scheduled.get(url)
        if known is not None:
            if depth < known:
                self.scheduled[url] = depth
                return CLOSER
            return SEEN
        if url in self.too_deep and depth > self.max_depth:
            return SEEN
        rule = self._why_refused(url, depth)
        if rule == MAX_DEPTH:
            if len(self.too_deep) < REFUSED_MEMORY:
                self.too_deep.add(url)
            return rule
        self.too_deep.discard(url)
        if rule is None:
            self.scheduled[url] = depth
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

    def depth_of(self, url: str) -> int | None:
        """The shortest depth ``url`` is known at, None when it is not scheduled."""
        return self.scheduled.get(url)

    def expand(self, url: str, links: list[str], step: int = 1) -> int | None:
        """The depth to follow the links of ``url``'s page at (its depth + ``step``; None when
        ``url`` is not scheduled), remembering them for :meth:`follow_again`.

        ``step`` is 1 for links, 0 for a canonical URL (the same page, so the same depth).
        """
        depth = self.scheduled.get(url)
        if depth is None:
            return None
        previous = self._followed.pop(url, None)
        if previous is not None:
            self._links_held -= len(previous[0])
        # A page at depth 0 is reached by no shorter path: nothing to follow again.
        if depth > 0 and links:
            if self._links_held + len(links) <= LINK_MEMORY:
                self._followed[url] = (tuple(links), step)
                self._links_held += len(links)
            else:
                self.links_forgotten += 1
        return depth + step

    def follow_again(self, url: str) -> list[tuple[str, int]]:
        """After :data:`CLOSER`: the links of ``url``'s page (if followed already) at its new depth."""
        entry = self._followed.get(url)
        if entry is None:
            return []
        links, step = entry
        depth = self.scheduled[url]
        if depth == 0:
            del self._followed[url]
            self._links_held -= len(links)
        return [(link, depth + step) for link in links]

    def _why_refused(self, url: str, depth: int) -> str | None:
        if len(url) > self.max_url_length:
            return "url-too-long"
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        if segments and max(Counter(segments).values()) > self.max_segment_repeats:
            return "repeated-segments"
        if depth > self.max_depth:
            return MAX_DEPTH
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
