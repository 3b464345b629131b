"""Messaging pivots: retired terms and claims, and where a site still uses them.

A product renamed, an offer withdrawn: the site config's ``messaging`` section
(:class:`sitekb.sites.MessagingRule`) lists what must go. This module owns the
matching, pure and free of the database:

- a ``term`` matches case-insensitively on word boundaries, whatever run of
  whitespace, line breaks or markdown emphasis (``**Acme** Cloud``) separates
  its words; a ``pattern`` is a regular expression, case-insensitive too;
- :func:`scan` finds, for every rule, the pages of a snapshot that use it (URL,
  title, how often, a short excerpt around the first hit, the ids of their
  chunks that do) and the pages held back because of it: a
  :class:`Finding` per rule, hits or not (no page left is the pivot done);
- :func:`quarantine_failures` is what the validate stage's gate adds to a
  document under a ``quarantine`` rule (before it is chunked or embedded);
- :func:`block_failures` is what the evaluate stage's gate rejects a snapshot
  with under a ``block`` rule.

The store side (reading a run's documents and a snapshot's chunks, keeping the
findings) is :mod:`sitekb.store.messaging`; the stages call it through
:mod:`sitekb.quality.gate`.

Settings read (passed in): the site config's ``messaging`` section.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from sitekb.quality.checks import Failure
from sitekb.sites import MessagingRule

CHECK = "messaging"          # the check name a messaging failure carries (quarantine, gate reasons)
EXCERPT_CONTEXT = 60         # characters of context each side of the first hit
# Markdown emphasis or code marks that may wrap the words of a phrase: "**Acme** Cloud" is still the phrase.
_MARKS = r"[*_~`]*"


def term_regex(term: str) -> str:
    """The regular expression of a term: its words in order, any whitespace between, on word boundaries."""
    words = term.split()
    body = f"{_MARKS}\\s+{_MARKS}".join(re.escape(word) for word in words)
    # \b only works next to a word character: "C++" or "Acme Cloud™" end in none. A letter or digit, not
    # any \w, bounds a word: "_Acme Cloud_" is markdown emphasis, and "_" is a \w.
    start = r"(?<![^\W_])" if re.match(r"\w", words[0]) else ""
    end = r"(?![^\W_])" if re.search(r"\w$", words[-1]) else ""
    return f"{start}{body}{end}"


@lru_cache(maxsize=512)
def _compiled(kind: str, text: str) -> re.Pattern:
    return re.compile(term_regex(text) if kind == "term" else text, re.IGNORECASE)


def matcher(rule: MessagingRule) -> re.Pattern:
    """The compiled expression of a rule (its pattern was validated when the config loaded)."""
    return _compiled("term", rule.term) if rule.term is not None else _compiled("pattern", rule.pattern or "")


def reason(rule: MessagingRule) -> str:
    """A rule for people: ``retired term "Acme Cloud" (use "Acme Platform")``."""
    what = f'retired term "{" ".join(rule.term.split())}"' if rule.term is not None else \
        f'retired claim "{rule.name}"' if rule.name else f"retired wording /{rule.pattern}/"
    advice = [f'use "{rule.replacement}"'] if rule.replacement else []
    if rule.note:
        advice.append(rule.note)
    return f"{what} ({'; '.join(advice)})" if advice else what


def excerpt(text: str, start: int, end: int, context: int = EXCERPT_CONTEXT) -> str:
    """The hit at ``text[start:end]`` with some words around it, on one line."""
    left, right = max(0, start - context), min(len(text), end + context)
    # Whole words only: widen to the nearest space (within a few characters) rather than cut one.
    while 0 < left < start and not text[left - 1].isspace() and start - left < context + 20:
        left -= 1
    while right < len(text) and not text[right].isspace() and right - end < context + 20:
        right += 1
    snippet = " ".join(text[left:right].split())
    return ("…" if left > 0 else "") + snippet + ("…" if right < len(text) else "")


@dataclass(frozen=True)
class Hits:
    """How often a rule matches one text, and where first."""

    count: int
    excerpt: str
    matched: str          # the first match as written on the page

    @classmethod
    def of(cls, rule: MessagingRule, text: str) -> "Hits | None":
        found = [m for m in matcher(rule).finditer(text or "") if m.end() > m.start()]
        if not found:
            return None
        first = found[0]
        return cls(len(found), excerpt(text, first.start(), first.end()), " ".join(first.group(0).split()))


def page_text(title: str | None, markdown: str | None) -> str:
    """What a page says, as the rules read it: its title, then its text."""
    return "\n\n".join(part for part in (title, markdown) if part)


def quarantine_failures(rules: Sequence[MessagingRule], title: str | None, markdown: str | None) -> list[Failure]:
    """The failures of a document under the ``quarantine`` rules it breaks (one per rule)."""
    text = page_text(title, markdown)
    failures = []
    for rule in rules:
        if rule.policy != "quarantine":
            continue
        hits = Hits.of(rule, text)
        if hits is not None:
            times = "once" if hits.count == 1 else f"{hits.count} times"
            failures.append(Failure(
                CHECK, rule.key, "quarantine",
                f"{reason(rule)}: {times}, first in “{hits.excerpt}”; change the page, or approve it if it may "
                f"keep the wording (messaging rule {rule.key!r}, policy quarantine)"))
    return failures


@dataclass
class PageHit:
    """A page that uses a rule's term: where, how often, the first hit in context, its chunks that do."""

    url: str
    title: str | None
    count: int
    excerpt: str
    chunk_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Finding:
    """One rule over one snapshot: the pages (and chunks) still using it, and those held back for it."""

    rule: str
    kind: str                       # term | pattern
    match: str                      # the term or the pattern
    policy: str
    replacement: str | None
    note: str | None
    reason: str
    pages: list[PageHit] = field(default_factory=list)
    held_back: list[PageHit] = field(default_factory=list)

    @property
    def chunk_ids(self) -> list[str]:
        return [chunk_id for page in self.pages for chunk_id in page.chunk_ids]

    def as_dict(self) -> dict:
        return {"rule": self.rule, "kind": self.kind, "match": self.match, "policy": self.policy,
                "replacement": self.replacement, "note": self.note, "reason": self.reason,
                "pages": [p.as_dict() for p in self.pages], "chunks": len(self.chunk_ids),
                "chunk_ids": self.chunk_ids, "held_back": [p.as_dict() for p in self.held_back]}


def finding_for(rule: MessagingRule) -> Finding:
    """An empty finding of ``rule`` (no page uses it)."""
    return Finding(rule=rule.key, kind="term" if rule.term is not None else "pattern",
                   match=rule.term if rule.term is not None else rule.pattern or "", policy=rule.policy,
                   replacement=rule.replacement, note=rule.note, reason=reason(rule))


def scan(rules: Sequence[MessagingRule], pages: Iterable[Mapping], chunks: Iterable[Mapping] = (),
         held_back: Iterable[Mapping] = ()) -> list[Finding]:
    """Every rule's finding over a snapshot, in the rules' order.

    ``pages``: the snapshot's pages (``url``, ``title``, ``markdown``); ``chunks``:
    its chunks (see :func:`attach_chunks`); ``held_back``: pages quarantined by a
    messaging rule (``url``, ``title``, ``markdown``, ``rules``: the keys of the
    rules that held it back).
    """
    findings = {rule.key: finding_for(rule) for rule in rules}
    by_key = {rule.key: rule for rule in rules}
    for page in pages:
        text = page_text(page.get("title"), page.get("markdown"))
        for rule in rules:
            hits = Hits.of(rule, text)
            if hits is not None:
                findings[rule.key].pages.append(PageHit(page["url"], page.get("title"), hits.count, hits.excerpt))
    for page in held_back:
        text = page_text(page.get("title"), page.get("markdown"))
        for key in page.get("rules") or ():
            if key in by_key:  # a rule since removed from the config is not reported
                hits = Hits.of(by_key[key], text)
                findings[key].held_back.append(PageHit(page["url"], page.get("title"), hits.count if hits else 0,
                                                       hits.excerpt if hits else ""))
    found = list(findings.values())
    for finding in found:
        finding.pages.sort(key=lambda p: p.url)
        finding.held_back.sort(key=lambda p: p.url)
    attach_chunks(rules, found, chunks)
    return found


def hit_urls(findings: Sequence[Finding]) -> list[str]:
    """The URLs of the pages any rule found anything on (the only ones whose chunks need reading)."""
    return sorted({page.url for finding in findings for page in finding.pages})


def attach_chunks(rules: Sequence[MessagingRule], findings: Sequence[Finding], chunks: Iterable[Mapping]) -> None:
    """Give each page hit the ids of its chunks that use the rule too.

    ``chunks``: ``chunk_id``, ``url``, ``heading_path``, ``content``; a chunk uses
    a term when its text or its heading path does (the page title is the page's).
    """
    by_key = {rule.key: rule for rule in rules}
    pages_by_url: dict[str, list[tuple[MessagingRule, PageHit]]] = {}
    for finding in findings:
        for page in finding.pages:
            pages_by_url.setdefault(page.url, []).append((by_key[finding.rule], page))
    for chunk in chunks:
        hits = pages_by_url.get(chunk["url"])
        if not hits:
            continue  # a page no rule found anything on has no chunk that uses one
        text = "\n".join([*(chunk.get("heading_path") or []), chunk.get("content") or ""])
        for rule, page in hits:
            if Hits.of(rule, text) is not None:
                page.chunk_ids.append(chunk["chunk_id"])
    for pairs in pages_by_url.values():
        for _, page in pairs:
            page.chunk_ids.sort()


def block_failures(findings: Sequence[Finding], snapshot_id: int | None = None, shown: int = 5) -> list[Failure]:
    """The gate's failures of a snapshot: one per ``block`` rule that a page of it still uses."""
    listing = f"`sitekb messaging --snapshot {snapshot_id if snapshot_id is not None else 'ID'}`"
    failures = []
    for finding in findings:
        if finding.policy != "block" or not finding.pages:
            continue
        urls = [page.url for page in finding.pages]
        listed = ", ".join(urls[:shown]) + (f" and {len(urls) - shown} more" if len(urls) > shown else "")
        failures.append(Failure(
            CHECK, finding.rule, "block",
            f"messaging rule {finding.rule!r} (policy block): {finding.reason} is still on {len(urls)} page(s) "
            f"({len(finding.chunk_ids)} chunks): {listed}. Change those pages, or set the rule's policy to "
            "quarantine (hold the pages back) or report in the site config's messaging section, then run again; "
            f"{listing} lists every hit"))
    return failures
