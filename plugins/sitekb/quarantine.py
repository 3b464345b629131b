"""The quarantine ledger: what the quality gate held back, and the approvals that let it through.

A quarantined document stays in ``sitekb.documents`` with status
``quarantined`` and every failed check with its measured value in
``failures``. A content owner approves one with
``sitekb quarantine approve URL --reason ...``; the approval is stored in
``sitekb.quarantine_approvals`` with the document's content hash, and the
validate stage accepts that URL for as long as its text hashes the same (a
changed page needs a new approval).

Approvals cover the document checks only. A document whose chunks do not fit
the embedding model (checks ``chunks``/``max_chunk_tokens``) cannot be
approved: the model could not take it anyway.
"""

from __future__ import annotations

import getpass
import json

import psycopg
from psycopg.rows import dict_row

from sitekb.errors import ConfigError, NotFound, SitekbError

UNAPPROVABLE = frozenset({"chunks", "max_chunk_tokens"})

# The documents of the latest run of each site that got through validation.
_LATEST_DOCUMENTS = """
    SELECT d.* FROM sitekb.documents d
    JOIN (SELECT DISTINCT ON (site) site, run_id FROM sitekb.runs
          WHERE stages ? 'validate' ORDER BY site, started_at DESC, run_id DESC) latest USING (site, run_id)
"""


def list_quarantined(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    """Quarantined and approved documents of the latest validated run of each site."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT d.site, d.url, d.title, d.status, d.failures, d.run_id, d.content_hash, d.word_count,
                       a.id AS approval_id, a.reason AS approval_reason, a.approved_by, a.approved_at
                FROM ({_LATEST_DOCUMENTS}) d
                LEFT JOIN sitekb.quarantine_approvals a ON a.id = d.approval_id
                WHERE (d.status = 'quarantined' OR d.approval_id IS NOT NULL)
                  AND (%(site)s::text IS NULL OR d.site = %(site)s)
                ORDER BY d.site, d.status DESC, d.url""",
            {"site": site},
        ).fetchall()


def approvals_for(conn: psycopg.Connection, site: str) -> dict[tuple[str, str], dict]:
    """Approvals of a site keyed by (url, content_hash)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, url, content_hash, reason, approved_by, approved_at FROM sitekb.quarantine_approvals "
            "WHERE site = %s",
            (site,),
        ).fetchall()
    return {(r["url"], r["content_hash"]): r for r in rows}


def approve(conn: psycopg.Connection, url: str, reason: str, *, site: str | None = None,
            approved_by: str | None = None) -> dict:
    """Record an approval of the quarantined document at ``url`` (latest validated run); return it."""
    if not reason or not reason.strip():
        raise ConfigError("an approval needs a reason: --reason 'why this page may be published'")
    with conn.cursor(row_factory=dict_row) as cur:
        docs = cur.execute(
            f"""SELECT site, url, run_id, status, failures, content_hash, approval_id FROM ({_LATEST_DOCUMENTS}) d
                WHERE url = %(url)s AND (%(site)s::text IS NULL OR site = %(site)s)""",
            {"url": url, "site": site},
        ).fetchall()
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
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """INSERT INTO sitekb.quarantine_approvals (site, url, content_hash, reason, approved_by, run_id, failures)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (site, url, content_hash) DO UPDATE
                   SET reason = EXCLUDED.reason, approved_by = EXCLUDED.approved_by, approved_at = now(),
                       run_id = EXCLUDED.run_id, failures = EXCLUDED.failures
               RETURNING id, site, url, content_hash, reason, approved_by, approved_at, run_id, failures""",
            (doc["site"], url, doc["content_hash"], reason.strip(), approved_by or _actor(), doc["run_id"],
             json.dumps(doc["failures"])),
        ).fetchone()
    return row


def list_approvals(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, site, url, content_hash, reason, approved_by, approved_at, run_id, failures
               FROM sitekb.quarantine_approvals WHERE %(site)s::text IS NULL OR site = %(site)s
               ORDER BY site, url, approved_at DESC""",
            {"site": site},
        ).fetchall()


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
