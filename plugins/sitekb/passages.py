"""What a search returns, and the words every caller shares: modes, the default alias, the limits.

One :class:`Passage` type serves the SQL API's rows (:mod:`sitekb.query`),
the HTTP API's responses (:mod:`sitekb.api`), the Python client
(:mod:`sitekb.client`) and the CLI, so a field added here reaches them all.
Standard library only: a frontend that imports the client imports nothing else.
The SQL function ``sitekb_api.search`` checks the same modes and limits
(tests hold the two to each other).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Iterator, Literal

MODES = ("vector", "keyword", "hybrid")
Mode = Literal[MODES]  # type: ignore[valid-type]  # Literal["vector", "keyword", "hybrid"]
# Hybrid is the default: on the pydocs dev set it ranks the answering page higher than
# either leg alone, overall and on every kind of question (README, Benchmarks).
DEFAULT_MODE: Mode = "hybrid"
DEFAULT_ALIAS = "production"
MAX_K = 100
MAX_QUERY_CHARS = 2000
# Hybrid: the weight of the vector leg's standardised score (the keyword leg has the rest).
# sitekb_api.search spells the same default (tests/unit/test_house.py holds them equal).
DEFAULT_VECTOR_WEIGHT = 0.85
# The HTTP API, the client and the CLI return at most this many passages of one page unless
# asked otherwise, so an answer cites several pages instead of one page three times (the SQL
# function's own default is no limit, as it always was).
DEFAULT_PER_PAGE = 2
MAX_PAGES = 20               # sitekb_api.search_pages: pages per answer
MAX_PAGE_PASSAGES = 5        # ... and passages per page
DEFAULT_PAGE_PASSAGES = 3


@dataclass
class Passage:
    """One passage of an answer, with its citation."""

    rank: int
    chunk_id: str
    url: str
    title: str | None
    heading_path: list[str]
    content: str
    snippet: str
    score: float
    language: str | None = None
    tags: list[str] = field(default_factory=list)
    published: str | None = None

    def __post_init__(self) -> None:
        # Titles and headings come from pages anyone writes, and frontends put them in
        # their own HTML: they leave the query path as plain text, whatever a snapshot holds.
        self.title = None if self.title is None else plain_text(self.title)
        self.heading_path = [plain_text(h) for h in self.heading_path]

    def as_dict(self) -> dict:
        return asdict(self)


class _Answer:
    """A search's answer is a sequence of what it found (``_items``: passages or pages)."""

    _items: str

    def __iter__(self) -> Iterator:
        return iter(getattr(self, self._items))

    def __len__(self) -> int:
        return len(getattr(self, self._items))

    def __getitem__(self, index: int):
        return getattr(self, self._items)[index]


@dataclass
class SearchResult(_Answer):
    """The passages of one search and the snapshot they came from; iterable over the passages."""

    _items = "passages"
    query: str
    site: str
    mode: str
    alias: str | None          # the alias read; None when a snapshot was pinned
    snapshot_id: int
    embedding_model: str
    passages: list[Passage]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["results"] = out.pop("passages")
        return out


@dataclass
class PagePassage:
    """One of a page's best passages."""

    chunk_id: str
    heading_path: list[str]
    content: str
    snippet: str
    score: float

    def __post_init__(self) -> None:
        self.heading_path = [plain_text(h) for h in self.heading_path]


@dataclass
class Page:
    """A page of an answer: ranked by its best passage, with its best passages (best first)."""

    rank: int
    url: str
    title: str | None
    score: float
    passages: list[PagePassage]
    language: str | None = None
    tags: list[str] = field(default_factory=list)
    published: str | None = None

    def __post_init__(self) -> None:
        self.title = None if self.title is None else plain_text(self.title)
        self.passages = [p if isinstance(p, PagePassage) else PagePassage(**p) for p in self.passages]


@dataclass
class PagesResult(_Answer):
    """The pages of one search and the snapshot they came from; iterable over the pages."""

    _items = "pages"
    query: str
    site: str
    mode: str
    alias: str | None
    snapshot_id: int
    embedding_model: str
    pages: list[Page]

    def as_dict(self) -> dict:
        return asdict(self)


def snippet_of(content: str, width: int = 220) -> str:
    """The start of a passage on one line, cut at a word boundary."""
    text = " ".join(content.split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


class _TextOnly(HTMLParser):
    """Collects the text of an HTML fragment, entities decoded, script and style bodies dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def plain_text(markup: str) -> str:
    """``markup`` as plain text on one line: tags stripped, entities decoded.

    Repeated until nothing changes (``&amp;lt;b&amp;gt;`` is a tag once decoded), so it is
    idempotent: the client may apply it again to what the server sent.
    """
    text = markup
    for _ in range(5):
        parser = _TextOnly()
        parser.feed(text)
        parser.close()
        cleaned = " ".join("".join(parser.parts).split())
        if cleaned == text:
            break
        text = cleaned
    return text
