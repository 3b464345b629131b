"""Which page a URL names, compared the way people write URLs (stdlib only).

A person writes ``/help/reset-password`` for the page the crawler stored as
``https://www.acme.example/help/reset-password.html``. :class:`PageRef` keeps
what names the page, so that both compare equal:

- the origin: scheme and host without case, the default port (80, 443) dropped,
  a user or password ignored;
- the path, segment by segment with percent-escapes decoded; empty segments (a
  trailing or doubled slash) ignored, a final ``index.<ext>`` dropped (the
  folder's page) and a final page extension (:data:`PAGE_EXTENSIONS`) dropped.
  Case is kept: servers tell ``/Help`` from ``/help``;
- the query, as key=value pairs in any order, only when the written URL has
  one (``/search`` means the page whatever its query; ``/search?q=a`` means
  that one); parameters the site strips from every URL are left out;
- the fragment never.

:class:`PageIndex` finds the pages of a snapshot a written URL means, and the
closest ones by path when there are none, for an error that says what exists.
The golden questions (``sitekb.quality.golden``) use both: to score search
results and to check that every expected URL is a page of the snapshot.
"""

from __future__ import annotations

import difflib
import fnmatch
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

# What a page's address may end in without naming a different page; PDFs and
# other files keep their extension (``/report`` is not ``/report.pdf``).
PAGE_EXTENSIONS = frozenset({"html", "htm", "xhtml", "shtml", "php", "asp", "aspx", "jsp"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class PageRef:
    """What names a page in a URL: origin, path segments and (when written) the query."""

    origin: str
    path: tuple[str, ...]
    query: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def parse(cls, url: str, base_url: str = "", *, ignore_params: Sequence[str] = (),
              any_query: bool = True) -> "PageRef":
        """The page ``url`` names, resolved against ``base_url`` when it is a path.

        ``ignore_params`` are shell patterns of query keys (``utm_*``) left
        out, case-insensitive. With ``any_query`` an absent or empty query
        means any query; without it (a crawled URL) it means none.
        """
        parts = urlsplit(urljoin(base_url, url.strip()) if base_url else url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:  # not a number: keep what was written, it will match nothing
            port = None
        host = (parts.hostname or "").rstrip(".")
        origin = f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else "")
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if segments:
            stem, dot, extension = segments[-1].rpartition(".")
            if dot and stem and extension.lower() in PAGE_EXTENSIONS:
                if stem == "index":
                    segments.pop()
                else:
                    segments[-1] = stem
        patterns = [p.lower() for p in ignore_params]
        pairs = tuple(sorted(
            (key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if not any(fnmatch.fnmatchcase(key.lower(), p) for p in patterns)
        ))
        query = None if (any_query and not pairs) else pairs
        return cls(origin, tuple(segments), query)

    @property
    def page(self) -> tuple[str, tuple[str, ...]]:
        """Origin and path: the page whatever its query."""
        return self.origin, self.path

    @property
    def path_text(self) -> str:
        return "/" + "/".join(self.path)

    def matches(self, other: "PageRef") -> bool:
        """Whether ``other`` (a crawled URL, parsed with ``any_query=False``) is the page this one names."""
        return self.page == other.page and (self.query is None or self.query == other.query)


class PageIndex:
    """The pages of a snapshot by what names them: which ones a written URL means, and the closest."""

    def __init__(self, urls: Iterable[str], *, ignore_params: Sequence[str] = ()):
        self.ignore_params = tuple(ignore_params)
        self._pages: dict[tuple[str, tuple[str, ...]], list[tuple[PageRef, str]]] = {}
        for url in urls:
            ref = PageRef.parse(url, ignore_params=self.ignore_params, any_query=False)
            self._pages.setdefault(ref.page, []).append((ref, url))

    def __len__(self) -> int:
        return sum(len(found) for found in self._pages.values())

    def find(self, ref: PageRef) -> list[str]:
        """The URLs of the pages ``ref`` names (more than one when it leaves the query open)."""
        return sorted(url for page, url in self._pages.get(ref.page, ()) if ref.matches(page))

    def closest(self, ref: PageRef, n: int = 3) -> list[str]:
        """The ``n`` URLs whose paths are most like ``ref``'s (case aside), best first."""
        wanted = ref.path_text.lower()
        matcher = difflib.SequenceMatcher(b=wanted, autojunk=False)
        best: list[tuple[float, str]] = []  # a min-heap of the n best so far
        for entries in self._pages.values():
            text = entries[0][0].path_text.lower()
            matcher.set_seq1(text)
            floor = best[0][0] if len(best) == n else -1.0
            # The cheap upper bounds first, as difflib.get_close_matches does: most paths stop here.
            if matcher.real_quick_ratio() <= floor or matcher.quick_ratio() <= floor:
                continue
            score = matcher.ratio() + (0.001 if entries[0][0].origin == ref.origin else 0.0)
            for _, url in sorted(entries, key=lambda entry: entry[1]):
                if len(best) < n:
                    heapq.heappush(best, (score, url))
                elif score > best[0][0]:
                    heapq.heapreplace(best, (score, url))
        return [url for _, url in sorted(best, key=lambda item: (-item[0], item[1]))]
