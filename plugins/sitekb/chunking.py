"""Structure-aware, token-aware chunking of a page's markdown.

Owns how markdown becomes `Chunk`s: sections by '#' heading (with their heading
path), blocks (paragraphs, lists, tables, fenced code) packed up to a token target,
oversized blocks split by lines, sentences, words and finally characters, the text
that gets embedded (the template with title and heading path), and content-derived
chunk ids. Limits are always checked by counting the full embed text with the
embedding model's own tokenizer, so `max_tokens` holds for every chunk.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sitekb.tokenization import Tokenizer

__all__ = [
    "CHUNKER_VERSION",
    "DEFAULT_TEMPLATE",
    "HEADING_SEPARATOR",
    "Chunk",
    "ChunkingConfig",
    "chunk_document",
]

# Bump whenever the same markdown and config would yield different chunks.
CHUNKER_VERSION = "sitekb-chunker/1"


def chunk_inputs(tokenizer_name: str, config: "ChunkingConfig") -> str:
    """What decides a document's chunks besides its URL, title and text: the chunker's version, the
    tokenizer and the chunking settings. Chunks cut with the same inputs from the same document are the
    chunks chunking would cut again (the chunk stage reuses them)."""
    from dataclasses import asdict

    key = json.dumps({"chunker": CHUNKER_VERSION, "tokenizer": tokenizer_name, "config": asdict(config)},
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]
DEFAULT_TEMPLATE = "{title}\n{heading_path}\n\n{text}"
HEADING_SEPARATOR = " > "

_TEMPLATE_FIELDS = frozenset({"title", "heading_path", "text"})
# Room always kept for a chunk's own text: below this a chunk is mostly header, and
# splitting by characters could meet a single character that does not fit.
_MIN_TEXT_TOKENS = 16
_ELLIPSIS = "…"
_TEXT_SLOT = "\x00sitekb-text\x00"

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")

Fits = Callable[[str], bool]


@dataclass(frozen=True)
class Chunk:
    """One embeddable piece of a document."""

    chunk_id: str
    seq: int
    heading_path: tuple[str, ...]
    text: str
    embed_text: str
    token_count: int


@dataclass(frozen=True)
class ChunkingConfig:
    """Token budget and embed template.

    Budgets are tokens of the whole embed text (template, title, heading path and
    text) plus the model's special tokens. Blocks are packed up to `target_tokens`;
    a block above the target that still fits `max_tokens` stays whole, and nothing
    ever exceeds `max_tokens`.
    """

    target_tokens: int = 200
    overlap_tokens: int = 0
    max_tokens: int = 256
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")
        if not 1 <= self.target_tokens <= self.max_tokens:
            raise ValueError(
                f"target_tokens must be between 1 and max_tokens={self.max_tokens}, got {self.target_tokens}"
            )
        if not 0 <= self.overlap_tokens < self.target_tokens:
            raise ValueError(
                f"overlap_tokens must be >= 0 and < target_tokens={self.target_tokens}, got {self.overlap_tokens}"
            )
        _check_template(self.template)


class _CannotFit(Exception):
    """Not even one character fits the limit (only with a wrapper such as a table header)."""


def _check_template(template: str) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"malformed chunk template {template!r}: {exc}") from exc
    unknown = set(fields) - _TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"chunk template {template!r} uses unknown fields {sorted(unknown)}; allowed: {sorted(_TEMPLATE_FIELDS)}"
        )
    if fields.count("text") != 1:
        raise ValueError(f"chunk template {template!r} must contain {{text}} exactly once")
    try:
        template.format(title="", heading_path="", text="")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:  # e.g. a bad format spec
        raise ValueError(f"malformed chunk template {template!r}: {exc}") from exc


def _render(template: str, title: str, heading: str, text: str) -> str:
    frame = template.format(title=title, heading_path=heading, text=_TEXT_SLOT)
    # An empty title or heading path leaves blank lines in the frame; tidy the
    # template's own whitespace only, never the chunk text.
    frame = re.sub(r"\n{3,}", "\n\n", frame).strip()
    return frame.replace(_TEXT_SLOT, text)


def _one_line(value: str | None) -> str:
    return " ".join((value or "").replace("\x00", " ").split())


# --- markdown structure ------------------------------------------------------


def _opening_fence(line: str) -> str | None:
    """The fence run ('```', '~~~~', ...) if `line` opens a fenced code block."""
    match = _FENCE.match(line)
    if match is None:
        return None
    run = match.group(1)
    # CommonMark: a backtick fence's info string cannot hold a backtick ("```x``` y" is inline code).
    if run[0] == "`" and "`" in line.strip()[len(run):]:
        return None
    return run


def _fence_after(fence: str | None, line: str) -> str | None:
    """The code fence open after `line`, given the one open before it (None: not in code)."""
    if fence is None:
        return _opening_fence(line)
    match = _FENCE.match(line)
    if match:
        run = match.group(1)
        if run[0] == fence[0] and len(run) >= len(fence) and not line.strip()[len(run):].strip():
            return None
    return fence


def _blocks(lines: Sequence[str]) -> list[str]:
    """Blank-line separated blocks; a fenced code block is one block, blank lines and all."""
    blocks: list[str] = []
    current: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if current:
            blocks.append("\n".join(current))
            current.clear()

    for line in lines:
        if fence is None:
            if not line.strip():
                flush()
                continue
            if _opening_fence(line):
                flush()
        current.append(line)
        after = _fence_after(fence, line)
        if fence is not None and after is None:
            flush()  # code ends its block even without a blank line after the fence
        fence = after
    flush()
    return blocks


@dataclass(frozen=True)
class _Section:
    path: tuple[str, ...]
    blocks: tuple[str, ...]


def _sections(markdown: str) -> list[_Section]:
    """Split markdown at ATX headings, tracking the h1 > h2 > ... path of each section."""
    sections: list[_Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    fence: str | None = None

    def close() -> None:
        blocks = _blocks(body)
        if blocks:
            sections.append(_Section(tuple(text for _, text in stack), tuple(blocks)))
        body.clear()

    for line in markdown.split("\n"):
        if fence is None and (match := _HEADING.match(line)):
            text = _one_line(_CLOSING_HASHES.sub("", match.group(2) or ""))
            if text:  # an empty heading ('#' alone) names nothing; drop it
                close()
                level = len(match.group(1))
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, text))
            continue
        fence = _fence_after(fence, line)
        body.append(line)
    close()
    return sections


# --- splitting oversized text ------------------------------------------------


def _longest_fitting_prefix(text: str, fits: Fits) -> int:
    """Length of the longest prefix of `text` that fits; `text` itself must not fit."""
    lo, hi = 0, len(text)  # text[:lo] fits (or lo == 0); text[:hi] does not
    probe = 32
    # Gallop first: pieces are a few hundred tokens, the text may be megabytes.
    while probe < hi:
        if not fits(text[:probe]):
            hi = probe
            break
        lo, probe = probe, probe * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(text[:mid]):
            lo = mid
        else:
            hi = mid
    return lo


def _split_chars(text: str, fits: Fits) -> list[str]:
    pieces: list[str] = []
    rest = text
    while rest and not fits(rest):
        cut = _longest_fitting_prefix(rest, fits)
        if cut == 0:
            raise _CannotFit(rest[:1])
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def _by_lines(text: str) -> tuple[list[str], str]:
    return text.split("\n"), "\n"


def _by_sentences(text: str) -> tuple[list[str], str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()], " "


def _by_words(text: str) -> tuple[list[str], str]:
    return text.split(), " "


_LEVELS = (_by_lines, _by_sentences, _by_words)


def _merge(pieces: Sequence[str], joiner: str, fits: Fits) -> list[str]:
    """Join consecutive pieces greedily while the joined text still fits.

    Each run is found by galloping then bisecting over how many pieces to join, so a
    chunk costs a few token counts instead of one per piece (thousands of words).
    """
    merged: list[str] = []
    start = 0
    while start < len(pieces):
        good, bad = start + 1, len(pieces) + 1  # pieces[start:good] is taken; [start:bad] is too much
        probe = start + 2
        while probe < bad:
            if not fits(joiner.join(pieces[start:probe])):
                bad = probe
                break
            good, probe = probe, start + 2 * (probe - start)
        while bad - good > 1:
            mid = (good + bad) // 2
            if fits(joiner.join(pieces[start:mid])):
                good = mid
            else:
                bad = mid
        merged.append(joiner.join(pieces[start:good]))
        start = good
    return [m.strip("\n") for m in merged if m.strip()]


def _split_text(text: str, fits: Fits, level: int = 0) -> list[str]:
    """Pieces of `text` that each fit: by lines, then sentences, then words, then characters."""
    if fits(text):
        return [text]
    for index in range(level, len(_LEVELS)):
        parts, joiner = _LEVELS[index](text)
        if len(parts) > 1:
            pieces = [piece for part in parts for piece in _split_text(part, fits, index + 1)]
            return _merge(pieces, joiner, fits)
    return _split_chars(text, fits)


def _split_wrapped(block: str, inner: str, wrap: Callable[[str], str], fits: Fits) -> list[str]:
    """Split `inner` so each piece fits inside `wrap` (code fences, a table header)."""
    if inner.strip():
        try:
            return [wrap(piece) for piece in _split_text(inner, lambda t: fits(wrap(t)))]
        except _CannotFit:
            pass  # the wrapper itself is too big: split the raw block instead
    return _split_text(block, fits)


def _split_block(block: str, fits: Fits) -> list[str]:
    """Split one block too big for a chunk, keeping code fenced and table rows under their header."""
    lines = block.split("\n")
    if (fence := _opening_fence(lines[0])) is not None:
        closed = len(lines) > 1 and _fence_after(fence, lines[-1]) is None
        inner = lines[1:-1] if closed else lines[1:]
        closer = lines[-1] if closed else fence
        return _split_wrapped(block, "\n".join(inner), lambda t: f"{lines[0]}\n{t}\n{closer}", fits)
    if len(lines) > 2 and lines[0].lstrip().startswith("|") and _TABLE_DELIMITER.match(lines[1]):
        header = "\n".join(lines[:2])
        return _split_wrapped(block, "\n".join(lines[2:]), lambda t: f"{header}\n{t}", fits)
    return _split_text(block, fits)


# --- assembly ----------------------------------------------------------------


class _Embedder:
    """Renders and counts embed text for one document (title fixed, heading per section)."""

    def __init__(self, tokenizer: Tokenizer, config: ChunkingConfig, title: str) -> None:
        self.tokenizer = tokenizer
        self.config = config
        literal = self.tokens("", "", "")
        room = config.max_tokens - literal
        if room < _MIN_TEXT_TOKENS:
            raise ValueError(
                f"the chunk template alone takes {literal} of max_tokens={config.max_tokens} tokens "
                f"(special tokens included); at least {_MIN_TEXT_TOKENS} must remain for text"
            )
        # Title and heading path together may use at most half of what the template
        # leaves, so a page with an absurd <title> or heading still gets chunked.
        self.header_limit = config.max_tokens - max(room // 2, _MIN_TEXT_TOKENS)
        title_limit = literal + (self.header_limit - literal) // 2
        self.title = _shorten(title, lambda t: self.tokens(t, "", "") <= title_limit)

    def tokens(self, title: str, heading: str, text: str) -> int:
        embed = _render(self.config.template, title, heading, text)
        return self.tokenizer.count(embed) + self.tokenizer.special_tokens

    def heading(self, path: tuple[str, ...]) -> str:
        """The heading path as shown in embed text, shortened from the outside if too long."""

        def fits(heading: str) -> bool:
            return self.tokens(self.title, heading, "") <= self.header_limit

        if path and self.title and path[0].casefold() == self.title.casefold():
            path = path[1:]  # the page's h1 is usually its title: don't say it twice
        for start in range(len(path)):
            shown = HEADING_SEPARATOR.join(path[start:])
            if start:
                shown = f"{_ELLIPSIS}{HEADING_SEPARATOR}{shown}"
            if fits(shown):
                return shown
        return _shorten(path[-1], fits) if path else ""


def _shorten(text: str, fits: Fits) -> str:
    """`text`, or its longest prefix plus an ellipsis that fits, or ''."""
    if fits(text):
        return text
    cut = _longest_fitting_prefix(text, lambda t: fits(t + _ELLIPSIS))
    return text[:cut].rstrip() + _ELLIPSIS if cut else ""


def _with_overlap(previous: str, body: str, overlap_tokens: int, tokenizer: Tokenizer, fits: Fits) -> str:
    """`body` preceded by the last words of `previous`, at most `overlap_tokens` of them and within the limit."""
    words = previous.split()

    def tail(count: int) -> str:
        return " ".join(words[len(words) - count:])

    def ok(count: int) -> bool:
        return tokenizer.count(tail(count)) <= overlap_tokens and fits(f"{tail(count)}\n\n{body}")

    lo, hi = 0, min(len(words), overlap_tokens) + 1  # every word is at least one token
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return f"{tail(lo)}\n\n{body}" if lo else body


def _chunk_id(url: str, path: tuple[str, ...], text: str, occurrence: int) -> str:
    # Only content goes in (not seq), so an edit changes only the chunks holding it;
    # a repeat of the same text under the same path gets its occurrence number.
    key: list[object] = [url, list(path), text]
    if occurrence:
        key.append(occurrence)
    payload = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _section_texts(section: _Section, embedder: _Embedder, heading: str) -> list[str]:
    """The texts of one section's chunks, each within config.max_tokens once rendered."""
    config = embedder.config

    def tokens(text: str) -> int:
        return embedder.tokens(embedder.title, heading, text)

    # A heading-heavy header may leave the target no room for text: keep some.
    target = min(config.max_tokens, max(config.target_tokens, tokens("") + _MIN_TEXT_TOKENS))

    def fits_target(text: str) -> bool:
        return tokens(text) <= target

    def fits_max(text: str) -> bool:
        return tokens(text) <= config.max_tokens

    units: list[str] = []
    for block in section.blocks:
        # A block that fits a chunk on its own stays whole, even above the target.
        units.extend([block] if fits_max(block) else _split_block(block, fits_target))

    texts: list[str] = []
    previous: str | None = None
    for body in _merge(units, "\n\n", fits_target):
        text = body
        if config.overlap_tokens and previous is not None:
            text = _with_overlap(previous, body, config.overlap_tokens, embedder.tokenizer, fits_max)
        previous = body
        # Safety net: token counts are not additive, so the final text is checked again.
        texts.extend([text] if fits_max(text) else _split_text(text, fits_max))
    return texts


def chunk_document(
    markdown: str,
    *,
    url: str,
    title: str | None,
    tokenizer: Tokenizer,
    config: ChunkingConfig = ChunkingConfig(),
) -> list[Chunk]:
    """Split a document's markdown into chunks whose embed text never exceeds config.max_tokens.

    Raises ValueError when the template leaves too little room for text.
    """
    if not markdown or not markdown.strip():
        return []
    embedder = _Embedder(tokenizer, config, _one_line(title))
    lines = [line.rstrip() for line in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")]

    chunks: list[Chunk] = []
    occurrences: dict[tuple[tuple[str, ...], str], int] = {}
    for section in _sections("\n".join(lines)):
        heading = embedder.heading(section.path)
        try:
            texts = _section_texts(section, embedder, heading)
        except _CannotFit as exc:  # unreachable while _MIN_TEXT_TOKENS holds; fail loudly if not
            raise ValueError(
                f"max_tokens={config.max_tokens} leaves no room for the character {exc.args[0]!r}"
            ) from exc
        for text in texts:
            occurrence = occurrences.get((section.path, text), 0)
            occurrences[(section.path, text)] = occurrence + 1
            chunks.append(
                Chunk(
                    chunk_id=_chunk_id(url, section.path, text, occurrence),
                    seq=len(chunks),
                    heading_path=section.path,
                    text=text,
                    embed_text=_render(config.template, embedder.title, heading, text),
                    token_count=embedder.tokens(embedder.title, heading, text),
                )
            )
    return chunks
