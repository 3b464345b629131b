"""Content owners' corrections of extracted text (``sitekb.corrections``), and the documents they start from.

A correction holds the markdown that replaces one page's extracted text, keyed
by the hash of the text the extractor made from the page when it was added. It
is active until it is removed or the page changes (it expires then; see
:mod:`sitekb.corrections`). Adding, removing and expiring are written to the
audit log (:mod:`sitekb.store.audit`) in the same transaction.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from sitekb.store import audit

_FIELDS = ("id, site, url, content_hash, markdown, reason, added_by, added_at, status, expired_at, expired_hash, "
           "expired_run, removed_at, removed_by")


def active(conn: psycopg.Connection, site: str) -> dict[str, dict]:
    """The site's active corrections by URL."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_FIELDS} FROM sitekb.corrections WHERE site = %s AND status = 'active'",
                           (site,)).fetchall()
    return {r["url"]: r for r in rows}


def find_active(conn: psycopg.Connection, url: str, site: str | None = None) -> list[dict]:
    """The active corrections of ``url`` (one per site that has one; of ``site`` only when given)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT {_FIELDS} FROM sitekb.corrections
                WHERE url = %(url)s AND status = 'active' AND (%(site)s::text IS NULL OR site = %(site)s)
                ORDER BY site""", {"url": url, "site": site}).fetchall()


def add(conn: psycopg.Connection, *, site: str, url: str, content_hash: str, markdown: str, reason: str,
        added_by: str) -> dict:
    """Record a correction of one page; an active one of the same page is replaced (and recorded as removed)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        replaced = cur.execute(
            """UPDATE sitekb.corrections SET status = 'removed', removed_at = now(), removed_by = %s
               WHERE site = %s AND url = %s AND status = 'active' RETURNING id""",
            (added_by, site, url)).fetchall()
        for row in replaced:
            audit.record(conn, site, "correction removed", added_by, reason="replaced by a new correction",
                         details={"target": url, "correction_id": row["id"]})
        row = cur.execute(
            f"""INSERT INTO sitekb.corrections (site, url, content_hash, markdown, reason, added_by)
                VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_FIELDS}""",
            (site, url, content_hash, markdown, reason, added_by)).fetchone()
        audit.record(conn, site, "corrected", added_by, reason=reason,
                     details={"target": url, "correction_id": row["id"], "content_hash": content_hash})
        return row


def remove(conn: psycopg.Connection, *, site: str, url: str, removed_by: str, reason: str = "") -> dict | None:
    """End the active correction of a page (its own text is used from the next run on); None when there is none."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"""UPDATE sitekb.corrections SET status = 'removed', removed_at = now(), removed_by = %s
                WHERE site = %s AND url = %s AND status = 'active' RETURNING {_FIELDS}""",
            (removed_by, site, url)).fetchone()
        if row is not None:
            audit.record(conn, site, "correction removed", removed_by, reason=reason,
                         details={"target": url, "correction_id": row["id"]})
        return row


def expire(conn: psycopg.Connection, correction_id: int, *, new_hash: str, run_id: str, actor: str) -> dict | None:
    """Mark an active correction expired: the page's text changed to ``new_hash`` in ``run_id``."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"""UPDATE sitekb.corrections SET status = 'expired', expired_at = now(), expired_hash = %s,
                       expired_run = %s
                WHERE id = %s AND status = 'active' RETURNING {_FIELDS}""",
            (new_hash, run_id, correction_id)).fetchone()
        if row is not None:
            audit.record(conn, row["site"], "correction expired", actor,
                         reason=f"the page changed in run {run_id} (content {row['content_hash'][:12]} -> "
                                f"{new_hash[:12]})",
                         details={"target": row["url"], "correction_id": row["id"], "content_hash": new_hash})
        return row


def expired_in_run(conn: psycopg.Connection, site: str, run_id: str) -> list[dict]:
    """The corrections the extraction of ``run_id`` expired (a retried extract stage reports them again)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_FIELDS} FROM sitekb.corrections WHERE site = %s AND expired_run = %s ORDER BY url",
            (site, run_id)).fetchall()


def listing(conn: psycopg.Connection, site: str | None = None, *, every: bool = False) -> list[dict]:
    """Corrections by site and URL, newest first: the active ones, or ``every`` one ever recorded."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT {_FIELDS} FROM sitekb.corrections
                WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(every)s OR status = 'active')
                ORDER BY site, url, added_at DESC, id DESC""",
            {"site": site, "every": every}).fetchall()


# The documents of the newest run of each site that got through validation (as sitekb.store.documents reads it).
_NEWEST_VALIDATED = """
    SELECT d.* FROM sitekb.documents d
    JOIN (SELECT DISTINCT ON (site) site, run_id FROM sitekb.runs
          WHERE stages ? 'validate' ORDER BY site, started_at DESC, run_id DESC) latest USING (site, run_id)
"""


def newest_documents(conn: psycopg.Connection, url: str, site: str | None = None) -> list[dict]:
    """The document at ``url`` in the newest validated run of each site (or of ``site``), with the hash of
    the extractor's own text (``source_hash``: the content hash, unless the document was corrected)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT site, url, run_id, status, failures, content_hash,
                       coalesce(source_hash, content_hash) AS source_hash, correction_id
                FROM ({_NEWEST_VALIDATED}) d
                WHERE url = %(url)s AND (%(site)s::text IS NULL OR site = %(site)s) ORDER BY site""",
            {"url": url, "site": site}).fetchall()


def quarantined(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    """The quarantined documents of the newest validated run of each site (or of ``site``), with their text."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT site, url, run_id, title, markdown, failures, content_hash,
                       coalesce(source_hash, content_hash) AS source_hash, correction_id
                FROM ({_NEWEST_VALIDATED}) d
                WHERE status = 'quarantined' AND (%(site)s::text IS NULL OR site = %(site)s)
                ORDER BY site, url""", {"site": site}).fetchall()
