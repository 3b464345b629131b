"""Why an answer: each passage of a search with where it came from (``sitekb explain``, ``POST /v1/explain``).

:func:`explain` runs the one query path (:func:`sitekb.query.search`) and asks
``sitekb_api.explain`` about the chunks it found, in the snapshot that answered:
the page and its fetch (time, ETag, Last-Modified), the content hash, what the
extractor cut (nosnippet sections, hidden elements, boilerplate), the extractor,
chunker and embedding versions, the snapshot and each time it was published (by
whom, why), the quality checks and any approval, a content owner's correction,
and the page's history across the snapshots a frontend may read.
:func:`explain_chunk` explains one chunk by id. The SQL function is what a
frontend calls over SQL, and the HTTP API calls it as the reader role, so it
shows only what belongs to a published snapshot: no raw page bodies.

The result types (:class:`Explained`, :class:`Explanation`) and
:func:`format_explanation` use the standard library only: the Python client
returns them too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterator

from sitekb.passages import DEFAULT_ALIAS, DEFAULT_MODE, snippet_of, plain_text


@dataclass
class Explained:
    """One passage and its provenance; the sections are JSON objects as ``sitekb_api.explain`` returns them."""

    chunk_id: str
    url: str
    title: str | None
    heading_path: list[str]
    content: str
    snippet: str
    page: dict[str, Any]
    extraction: dict[str, Any]
    chunking: dict[str, Any]
    embedding: dict[str, Any]
    snapshot: dict[str, Any]
    quality: dict[str, Any]
    history: dict[str, Any]
    correction: dict[str, Any] | None = None
    rank: int | None = None          # None when one chunk was explained by id
    score: float | None = None

    def __post_init__(self) -> None:
        self.title = None if self.title is None else plain_text(self.title)
        self.heading_path = [plain_text(h) for h in self.heading_path]

    @classmethod
    def from_row(cls, row: dict, rank: int | None = None, score: float | None = None) -> "Explained":
        return cls(snippet=snippet_of(row["content"]), rank=rank, score=score,
                   **{k: row.get(k) for k in ("chunk_id", "url", "title", "heading_path", "content", "page",
                                              "extraction", "chunking", "embedding", "snapshot", "quality",
                                              "history", "correction")})

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Explanation:
    """The explained passages of one search (or one chunk) and the snapshot they came from; iterable."""

    query: str | None
    site: str
    mode: str | None
    alias: str | None
    snapshot_id: int
    embedding_model: str
    passages: list[Explained] = field(default_factory=list)

    def __iter__(self) -> Iterator[Explained]:
        return iter(self.passages)

    def __len__(self) -> int:
        return len(self.passages)

    def __getitem__(self, index: int) -> Explained:
        return self.passages[index]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["results"] = out.pop("passages")
        return out


# -- reading ---------------------------------------------------------------------

def explain(conn, settings, question: str, *, site: str | None = None, k: int = 5, mode: str = DEFAULT_MODE,
            alias: str | None = None, snapshot_id: int | None = None, filters=None, ranking=None,
            unpublished: bool = False, cache=None) -> Explanation:
    """The passages :func:`sitekb.query.search` finds for ``question``, each explained.

    Same arguments as the search (``conn`` a connection or a pool's lender); the
    explanation is read from the snapshot the search answered from.
    """
    from sitekb import query

    result = query.search(conn, settings, question, site=site, k=k, mode=mode, alias=alias, snapshot_id=snapshot_id,
                          filters=filters or query.NO_FILTERS, ranking=ranking or query.DEFAULT_RANKING,
                          unpublished=unpublished, cache=cache)
    rows = {}
    if result.passages:
        rows = {r["chunk_id"]: r for r in _explain_rows(conn, result.site, [p.chunk_id for p in result],
                                                        snapshot_id=result.snapshot_id, unpublished=unpublished)}
    return Explanation(query=question, site=result.site, mode=mode, alias=result.alias,
                       snapshot_id=result.snapshot_id, embedding_model=result.embedding_model,
                       passages=[Explained.from_row(rows[p.chunk_id], p.rank, p.score) for p in result])


def explain_chunk(conn, chunk_id: str, *, site: str | None = None, alias: str | None = None,
                  snapshot_id: int | None = None, unpublished: bool = False) -> Explanation:
    """One chunk of a site's alias (default production) or of a pinned snapshot, explained.

    Raises NotFound when the snapshot holds no such chunk (or there is no such site, alias or snapshot).
    """
    from sitekb import query

    alias = None if snapshot_id is not None else (alias or DEFAULT_ALIAS)
    if site is None and snapshot_id is None:
        with _lend(conn)() as c:
            site = query.only_site(c, alias)
    (row,) = _explain_rows(conn, site, [chunk_id], alias=alias, snapshot_id=snapshot_id, unpublished=unpublished)
    snap = row["snapshot"]
    return Explanation(query=None, site=site or _site_of(conn, snap["snapshot_id"]), mode=None, alias=alias,
                       snapshot_id=snap["snapshot_id"], embedding_model=row["embedding"]["model"],
                       passages=[Explained.from_row(row)])


def _lend(conn):
    from contextlib import nullcontext

    return conn if callable(conn) else (lambda: nullcontext(conn))


def _explain_rows(conn, site: str | None, chunk_ids: list[str], *, alias: str | None = None,
                  snapshot_id: int | None = None, unpublished: bool = False) -> list[dict]:
    """``sitekb_api.explain`` of these chunks, in their order."""
    from sitekb import query

    with _lend(conn)() as c:
        return query.explain_chunks(c, site, chunk_ids, alias=alias, snapshot_id=snapshot_id,
                                    unpublished=unpublished)


def _site_of(conn, snapshot_id: int) -> str:
    from sitekb import query

    with _lend(conn)() as c:
        return query.resolve(c, None, None, snapshot_id)["site"]


# -- for people ------------------------------------------------------------------

def _when(value: Any) -> str:
    """An ISO timestamp (as JSON carries it) as 'YYYY-MM-DD HH:MM UTC'."""
    if not value:
        return "not recorded"
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        from datetime import timezone

        moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _short(digest: Any) -> str:
    return str(digest)[:12] if digest else "not recorded"


def _plural(n: Any, word: str) -> str:
    if n is None:
        return f"? {word}s"
    return f"{n} {word}" + ("" if n == 1 else "s")


_DECISIONS = {"moved": "published", "rolled_back": "rolled back", "approved": "approved"}


def format_passage(p: Explained) -> list[str]:
    """The block of lines that explains one passage."""
    page, ext, chunk, emb = p.page, p.extraction, p.chunking, p.embedding
    snap, quality, history = p.snapshot, p.quality, p.history or {}
    head = f"{p.rank}. [{p.score:.3f}] " if p.rank is not None and p.score is not None else "- "
    lines = [f"{head}{p.title or '(untitled)'}  {p.url}"]
    if p.heading_path:
        lines.append(f"   section    {' > '.join(p.heading_path)}")
    lines.append(f"   passage    {p.snippet}")
    validators = ", ".join(f"{name} {page[key]}" for name, key in (("ETag", "etag"), ("Last-Modified", "last_modified"))
                           if page.get(key)) or "no validators"
    lines.append(f"   fetched    {_when(page.get('fetched_at'))} ({validators}); page body {_short(page.get('page_hash'))}")
    lines.append(f"   content    {_short(page.get('content_hash'))}"
                 + (f", {page['language']}" if page.get("language") else "")
                 + (f", published {page['published']}" if page.get("published") else "")
                 + (f", modified {page['modified']}" if page.get("modified") else ""))
    share = ext.get("boilerplate_share")
    cut = (f"cut {_plural(ext.get('nosnippet_removed'), 'nosnippet section')}, "
           f"{_plural(ext.get('hidden_removed'), 'hidden element')}, "
           f"{_plural(ext.get('boilerplate_blocks'), 'boilerplate block')}"
           if ext.get("nosnippet_removed") is not None else "cuts not recorded (extracted before sitekb recorded them)")
    lines.append(f"   extracted  {ext.get('extractor_version')}: {cut}; {ext.get('words')} of "
                 f"{ext.get('visible_words') or '?'} visible words kept"
                 + (f" (boilerplate share {share:.0%})" if isinstance(share, (int, float)) else "")
                 + (f"; fallbacks: {', '.join(ext['fallbacks'])}" if ext.get("fallbacks") else ""))
    lines.append(f"   chunked    {chunk.get('chunker_version')} ({chunk.get('tokenizer')}): chunk {chunk.get('seq')}, "
                 f"{chunk.get('token_count')} tokens")
    lines.append(f"   embedded   {emb.get('provider')}:{emb.get('model')} ({emb.get('dimensions')} dimensions)")
    pubs = snap.get("publications") or []
    published = "; ".join(f"{_DECISIONS.get(e['decision'], e['decision'])} to {e['alias']} "
                          f"{_when(e['at'])} by {e['by']}" + (f" ({e['reason']})" if e.get("reason") else "")
                          for e in pubs) or "never published"
    lines.append(f"   snapshot   {snap.get('snapshot_id')} ({snap.get('state')}"
                 + (f", alias {', '.join(snap['aliases'])}" if snap.get("aliases") else "")
                 + f"), built {_when(snap.get('built_at'))}; {published}")
    gate = quality.get("gate") or {}
    checks = gate.get("checks") or []
    verdict = ("batch gate passed" if gate.get("passed") else "batch gate FAILED" if gate.get("passed") is False
               else "batch gate not recorded")
    if checks:
        verdict += f" ({sum(1 for c in checks if c.get('success'))}/{len(checks)} checks)"
    golden = gate.get("golden")
    if golden and golden.get("asked"):
        verdict += f", golden {golden.get('hits')}/{golden.get('asked')}"
    failed = [f.get("check") for f in quality.get("failed_checks") or []]
    measured = _measured(quality.get("measures") or {})
    lines.append(f"   quality    {quality.get('status')}"
                 + (f" despite failing {', '.join(failed)}" if failed else " by every document check")
                 + (f" ({measured})" if measured else "") + f"; {verdict}")
    approval = quality.get("approval")
    if approval:
        lines.append(f"   approved   by {approval['by']} {_when(approval['at'])}: {approval['reason']}")
    if p.correction:
        c = p.correction
        lines.append(f"   corrected  by {c['by']} {_when(c['at'])}: {c['reason']} (the text is a content owner's "
                     f"correction, {c['status']}; extracted text {_short(c.get('extracted_hash'))})")
    held = history.get("snapshots") or []
    first, changed = history.get("first_seen"), history.get("last_changed")
    lines.append(f"   history    in {_plural(len(held), 'kept snapshot')} ({', '.join(str(h['snapshot_id']) for h in held)})"
                 + (f"; first seen in {first['snapshot_id']} {_when(first['at'])}" if first else "")
                 + (f"; last changed in {changed['snapshot_id']} {_when(changed['at'])}" if changed else ""))
    return lines


def format_explanation(result: Explanation) -> str:
    """A block per passage, for a terminal."""
    what = f"{len(result)} passages for {result.query!r}" if result.query is not None else "chunk"
    lines = [f"Why: {what}, from snapshot {result.snapshot_id} of {result.site} ({result.embedding_model}"
             + (f", {result.mode} search" if result.mode else "") + ")"]
    for passage in result:
        lines.append("")
        lines += format_passage(passage)
    if not result.passages:
        lines.append("nothing found")
    return "\n".join(lines)


def _measured(measures: dict) -> str:
    """The few measures a person reads (every one is in --json): words, language, boilerplate, noise."""
    parts = []
    if measures.get("word_count") is not None:
        parts.append(f"{measures['word_count']} words")
    if measures.get("language"):
        parts.append(f"language {measures['language']}")
    if measures.get("boilerplate_share") is not None:
        parts.append(f"boilerplate {float(measures['boilerplate_share']):.0%}")
    if measures.get("looks_like_transcript") and measures.get("transcript_noise") is not None:
        parts.append(f"transcript noise {float(measures['transcript_noise']):.2f}")
    return ", ".join(parts)
