"""Corrections: a content owner's fixed text for a page, used instead of the extracted text while the page stays as it was.

A noisy transcript, a garbled table or a page the extractor cuts badly can be
fixed by hand: ``sitekb corrections add URL --file fixed.md --reason ...``
records the markdown with the hash of the text the extractor made from the page
then (the newest validated document of the URL). From the next run on (and in a
rerun ``sitekb run SITE --from extract``), the extract stage gives the page's
document the corrected text (:func:`apply`) before the quality checks judge it,
so a corrected transcript can leave the quarantine. When the page changes (the
extractor makes a different text), the correction expires: it is marked so with
the new hash, the run warns and records it, the audit log lists it, and the
page's own text is used again until somebody corrects it anew.

``sitekb quarantine export`` writes the quarantined documents as markdown files
with a small front matter (:func:`front_matter`); an editor fixes one and feeds
it back to ``corrections add``, whose reader (:func:`read_file`) strips the front
matter and checks that it names the same page and text.
"""

from __future__ import annotations

import getpass
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from sitekb.errors import ConfigError, NotFound
from sitekb.store import corrections as store

log = logging.getLogger(__name__)

MAX_CORRECTION_CHARS = 2_000_000
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


def current_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- files ---------------------------------------------------------------------

def front_matter(fields: dict) -> str:
    """A YAML front matter block (``---`` lines around it) of ``fields``."""
    import yaml

    return "---\n" + yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def parse_text(text: str) -> tuple[dict, str]:
    """(front matter, markdown) of a correction file; an empty dict when it has no front matter."""
    import yaml

    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text.lstrip("\ufeff")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"the front matter (between the --- lines) is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise ConfigError("the front matter (between the --- lines) must be 'key: value' lines")
    return meta, text[match.end():]


def read_file(path: Path) -> tuple[dict, str]:
    """(front matter, markdown) of a correction file, checked: UTF-8, not empty, not huge."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the correction file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CORRECTION_CHARS:
        raise ConfigError(f"{path} is {len(raw)} bytes; a correction is at most {MAX_CORRECTION_CHARS}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    if "\x00" in text:
        raise ConfigError(f"{path} holds a NUL character: it is not a text file")
    meta, markdown = parse_text(text)
    if not markdown.strip():
        raise ConfigError(f"{path} holds no text to publish (only front matter, or nothing)")
    return meta, markdown.strip() + "\n"


def slug(url: str) -> str:
    """A file name for a page: host and path in lower-case letters, digits and dashes."""
    parts = urlsplit(url)
    name = f"{parts.hostname or ''}{parts.path}".removesuffix(".html").removesuffix(".htm")
    if parts.query:
        name += "-" + parts.query
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return name[:120].rstrip("-") or "page"


# -- commands ----------------------------------------------------------------

def _document(conn: psycopg.Connection, url: str, site: str | None) -> dict:
    docs = store.newest_documents(conn, url, site)
    if not docs:
        where = f" of site {site!r}" if site else ""
        raise NotFound(f"no validated document{where} has the URL {url}: give the URL exactly as `sitekb quarantine` "
                       "or `sitekb search` shows it, after a run has extracted and validated the page")
    if len(docs) > 1:
        raise ConfigError(f"{url} belongs to several sites ({', '.join(d['site'] for d in docs)}): say which "
                          "with --site")
    return docs[0]


def add(conn: psycopg.Connection, url: str, markdown: str, reason: str, *, site: str | None = None,
        meta: dict | None = None, added_by: str | None = None) -> dict:
    """Record a correction of ``url``'s text, keyed by the hash of the page's newest extracted text.

    ``meta``: the file's front matter (from ``sitekb quarantine export``); when it
    names a URL or a content hash, they must be this page's now.
    """
    if not reason or not reason.strip():
        raise ConfigError("say why the text is corrected: --reason TEXT")
    if not re.search(r"[^\W_]", markdown or ""):
        raise ConfigError("the corrected text has no words: nothing to publish")
    meta = meta or {}
    doc = _document(conn, url, site or meta.get("site"))
    if meta.get("url") and str(meta["url"]) != url:
        raise ConfigError(f"the file's front matter is of {meta['url']}, not {url}: pass the URL it names")
    exported = str(meta.get("content_hash") or "")
    if exported and exported != doc["source_hash"]:
        raise ConfigError(f"the page changed since the file was exported (its text was {exported[:12]}, now "
                          f"{doc['source_hash'][:12]}): export it again (`sitekb quarantine export`) and redo the fix")
    from sitekb.untrusted import storable

    text, _ = storable(markdown)
    return store.add(conn, site=doc["site"], url=url, content_hash=doc["source_hash"], markdown=text.strip() + "\n",
                     reason=reason.strip(), added_by=added_by or current_actor())


def remove(conn: psycopg.Connection, url: str, *, site: str | None = None, removed_by: str | None = None,
           reason: str = "") -> dict:
    """End the active correction of ``url``; NotFound when it has none."""
    found = store.find_active(conn, url, site)
    if not found:
        raise NotFound(f"{url} has no active correction" + (f" in site {site!r}" if site else "")
                       + "; `sitekb corrections list` shows them")
    if len(found) > 1:
        raise ConfigError(f"{url} has corrections in several sites ({', '.join(r['site'] for r in found)}): say "
                          "which with --site")
    return store.remove(conn, site=found[0]["site"], url=url, removed_by=removed_by or current_actor(),
                        reason=reason)


def listing(conn: psycopg.Connection, site: str | None = None, *, every: bool = False) -> list[dict]:
    return store.listing(conn, site, every=every)


def export_quarantine(conn: psycopg.Connection, directory: Path, site: str | None = None) -> list[dict]:
    """Write each quarantined document of the newest validated run as ``directory/<slug>.md`` with a front matter.

    Returns one entry per file (site, url, path). Two pages with the same slug get
    ``-2``, ``-3``... A file already there is overwritten: exporting is repeatable.
    """
    rows = store.quarantined(conn, site)
    directory.mkdir(parents=True, exist_ok=True)
    written, taken = [], set()
    for row in rows:
        name = slug(row["url"])
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        path = directory / f"{candidate}.md"
        meta = {"site": row["site"], "url": row["url"], "content_hash": row["source_hash"],
                "reasons": [f"{f.get('check')}: {f.get('message')}" for f in row["failures"] or []]}
        if row["correction_id"] is not None:
            meta["corrected"] = f"this text is correction {row['correction_id']}, still quarantined"
        path.write_text(front_matter(meta) + "\n" + row["markdown"].strip() + "\n", encoding="utf-8")
        written.append({"site": row["site"], "url": row["url"], "path": str(path),
                        "reasons": meta["reasons"]})
    return written


# -- the extract stage ---------------------------------------------------------

@dataclass
class Applied:
    """What :func:`apply` did to a run's extracted documents."""

    documents: list
    corrected: dict[str, tuple[int, str]] = field(default_factory=dict)   # url -> (correction id, source hash)
    expired: list[dict] = field(default_factory=list)                     # the corrections that expired

    def warnings(self) -> list[str]:
        return [expired_warning(c) for c in self.expired]


def expired_warning(correction: dict) -> str:
    return (f"the correction of {correction['url']} (by {correction['added_by']}, {correction['added_at']:%Y-%m-%d}: "
            f"{correction['reason']}) expired: the page changed (text {correction['content_hash'][:12]} -> "
            f"{(correction['expired_hash'] or '')[:12]}), so its own text is used again; check the page and "
            "`sitekb corrections add` a new fix if it still needs one")


def apply(conn: psycopg.Connection, site: str, run_id: str, documents: Sequence, *, actor: str = "sitekb") -> Applied:
    """Give each document with an active correction for its exact text the corrected text; expire the others.

    A document whose page changed (its hash is not the correction's) keeps its
    own text and the correction expires. Run again for the same run (a retried
    task), the corrections it expired the first time are reported again.
    """
    from sitekb.extract import with_markdown

    wanted = store.active(conn, site)
    out = Applied(documents=[])
    for doc in documents:
        correction = wanted.get(doc.url)
        if correction is None:
            out.documents.append(doc)
        elif correction["content_hash"] == doc.content_hash:
            out.documents.append(with_markdown(doc, correction["markdown"]))
            out.corrected[doc.url] = (correction["id"], doc.content_hash)
        else:
            store.expire(conn, correction["id"], new_hash=doc.content_hash, run_id=run_id, actor=actor)
            out.documents.append(doc)
    out.expired = store.expired_in_run(conn, site, run_id)
    for correction in out.expired:
        log.warning("%s", expired_warning(correction))
    return out
