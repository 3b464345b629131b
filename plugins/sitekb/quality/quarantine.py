"""The quarantine ledger: what the quality gate held back, and the approvals that let it through.

A quarantined document stays in ``sitekb.documents`` with status
``quarantined`` and every failed check with its measured value in
``failures``. A content owner approves one with
``sitekb quarantine approve URL --reason ...``; the approval is stored in
``sitekb.quarantine_approvals`` with the document's content hash, and the
validate stage accepts that URL for as long as its text hashes the same (a
changed page needs a new approval).

The safety checks are document checks too: a page that quotes an injection
on purpose (a security article) is approved like any other. Its hidden text
is not part of the content hash (it never reaches the knowledge base), so an
approval of a page flagged for hidden text holds while its visible text stays
the same.

Approvals cover the document checks only. A document whose chunks do not fit
the embedding model (checks ``chunks``/``max_chunk_tokens``) cannot be
approved: the model could not take it anyway.
"""

from __future__ import annotations

import getpass

import psycopg

from sitekb.errors import ConfigError, NotFound, SitekbError
from sitekb.store import approvals, documents

UNAPPROVABLE = frozenset(documents.CHUNK_CHECKS)


def list_quarantined(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    """Quarantined and approved documents of the latest validated run of each site."""
    return documents.held_back(conn, site)


def approve(conn: psycopg.Connection, url: str, reason: str, *, site: str | None = None,
            approved_by: str | None = None) -> dict:
    """Record an approval of the quarantined document at ``url`` (latest validated run); return it."""
    if not reason or not reason.strip():
        raise ConfigError("an approval needs a reason: --reason 'why this page may be published'")
    docs = documents.newest_validated(conn, url, site)
    if not docs:
        where = f"site {site!r}" if site else "any site"
        raise NotFound(f"{url} is not a document of the latest run of {where}; "
                       "`sitekb quarantine` lists the quarantined documents with their exact URLs")
    if len(docs) > 1:
        sites = ", ".join(sorted(d["site"] for d in docs))
        raise ConfigError(f"{url} is a document of several sites ({sites}); pass --site to choose one")
    doc = docs[0]
    if doc["status"] != "quarantined" and doc["approval_id"] is None:
        raise SitekbError(f"{url} was not quarantined in run {doc['run_id']}; there is nothing to approve")
    blocking = sorted({f["check"] for f in doc["failures"]} & UNAPPROVABLE)
    if blocking:
        raise SitekbError(
            f"{url} cannot be approved: it failed {', '.join(blocking)}, so the embedding model cannot take it. "
            "Split the page or raise chunking.max_tokens within the model's limit."
        )
    return approvals.record(conn, site=doc["site"], url=url, content_hash=doc["content_hash"], reason=reason.strip(),
                            approved_by=approved_by or _actor(), run_id=doc["run_id"], failures=doc["failures"])


def list_approvals(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    return approvals.listing(conn, site)


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
