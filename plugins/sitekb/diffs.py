"""A snapshot diff a person reads: per changed page the sections that changed and a text diff, per removed page why.

:func:`sitekb.store.snapshot_tables.diff` says which pages came, went and
changed, from content-addressed chunk ids. :func:`readable` adds, for the
first ``pages`` changed pages, the headings of the chunks that changed and a
line diff of the page's indexed text (its chunks in order, each section under
its heading path), and for every removed page the reason from the newer run's
ledgers (:func:`sitekb.heldback.removal_reasons`): page not found, an opt-out,
quarantined, excluded by a config rule, or no longer linked.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import psycopg

from sitekb import heldback
from sitekb.store import snapshot_tables
from sitekb.store.snapshot_tables import SnapshotDiff

TOP_OF_PAGE = "(top of the page)"


@dataclass
class PageText:
    """What changed on one page: the sections, and the changed lines with a little context."""

    headings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    more_lines: int = 0          # diff lines past ``max_lines``, not shown


@dataclass
class ReadableDiff:
    diff: SnapshotDiff
    changes: dict[str, PageText] = field(default_factory=dict)
    removals: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = self.diff.as_dict()
        for page in out["changed"]:
            text = self.changes.get(page["url"])
            if text is not None:
                page.update(headings=text.headings, text_diff=text.lines, more_lines=text.more_lines)
        for page in out["removed"]:
            page.update(self.removals.get(page["url"], {}))
        return out


def readable(conn: psycopg.Connection, old, new, *, pages: int = 50, context: int = 1,
             max_lines: int = 40) -> ReadableDiff:
    """The diff from ``old`` to ``new`` with text for up to ``pages`` changed pages and reasons for removed ones."""
    result = ReadableDiff(snapshot_tables.diff(conn, old, new))
    urls = [p.url for p in result.diff.changed[:max(pages, 0)]]
    if urls and old is not None:
        before = snapshot_tables.page_chunks(conn, old, urls)
        after = snapshot_tables.page_chunks(conn, new, urls)
        for url in urls:
            result.changes[url] = page_text(before[url], after[url], context=context, max_lines=max_lines)
    removed = [p.url for p in result.diff.removed]
    if removed:
        result.removals = heldback.removal_reasons(conn, new.site, new.run_id, removed)
    return result


def page_text(before: list[tuple], after: list[tuple], *, context: int = 1, max_lines: int = 40) -> PageText:
    """The change between two versions of a page, each a list of (chunk id, heading path, text) in page order."""
    old_ids = {chunk_id for chunk_id, _, _ in before}
    new_ids = {chunk_id for chunk_id, _, _ in after}
    headings = [_heading(path) for chunk_id, path, _ in after if chunk_id not in old_ids]
    headings += [_heading(path) for chunk_id, path, _ in before if chunk_id not in new_ids]
    lines = []
    for line in difflib.unified_diff(_lines(before), _lines(after), n=context, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        lines.append("  ..." if line.startswith("@@") else line)
    if lines and lines[0] == "  ...":
        lines = lines[1:]
    shown = lines[:max_lines] if max_lines > 0 else lines
    return PageText(headings=list(dict.fromkeys(headings)), lines=shown, more_lines=len(lines) - len(shown))


def _heading(path: list[str]) -> str:
    return " > ".join(path) if path else TOP_OF_PAGE


def _lines(chunks: list[tuple]) -> list[str]:
    """A page's indexed text, one line per paragraph, each section opened by its heading path."""
    out: list[str] = []
    current = None
    for _, path, text in chunks:
        if path != current:
            out.append(f"## {_heading(path)}")
            current = path
        out.extend(line.strip() for line in text.splitlines() if line.strip())
    return out
