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
from typing import Iterator, Literal

MODES = ("vector", "keyword", "hybrid")
Mode = Literal[MODES]  # type: ignore[valid-type]  # Literal["vector", "keyword", "hybrid"]
# Vector is the default. On the demo site's golden questions hybrid ties with it
# without winning, and it costs a full-text ranking per query (README, Benchmarks).
DEFAULT_MODE: Mode = "vector"
DEFAULT_ALIAS = "production"
MAX_K = 100
MAX_QUERY_CHARS = 2000


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """The passages of one search and the snapshot they came from; iterable over the passages."""

    query: str
    site: str
    mode: str
    alias: str | None          # the alias read; None when a snapshot was pinned
    snapshot_id: int
    embedding_model: str
    passages: list[Passage]

    def __iter__(self) -> Iterator[Passage]:
        return iter(self.passages)

    def __len__(self) -> int:
        return len(self.passages)

    def __getitem__(self, index: int) -> Passage:
        return self.passages[index]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["results"] = out.pop("passages")
        return out


def snippet_of(content: str, width: int = 220) -> str:
    """The start of a passage on one line, cut at a word boundary."""
    text = " ".join(content.split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"
