"""Content owners' approvals of quarantined documents (``sitekb.quarantine_approvals``).

An approval is tied to the content hash of the document it approved: it lets
that exact text through every later run and stops applying as soon as the
page changes.
"""

from __future__ import annotations

import json

import psycopg
from psycopg.rows import dict_row


def for_site(conn: psycopg.Connection, site: str) -> dict[tuple[str, str], dict]:
    """The site's approvals keyed by (url, content_hash)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, url, content_hash, reason, approved_by, approved_at FROM sitekb.quarantine_approvals "
            "WHERE site = %s",
            (site,),
        ).fetchall()
    return {(r["url"], r["content_hash"]): r for r in rows}


def record(conn: psycopg.Connection, *, site: str, url: str, content_hash: str, reason: str, approved_by: str,
           run_id: str, failures: list) -> dict:
    """Record (or renew) an approval of one text of one page; return it."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """INSERT INTO sitekb.quarantine_approvals (site, url, content_hash, reason, approved_by, run_id, failures)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (site, url, content_hash) DO UPDATE
                   SET reason = EXCLUDED.reason, approved_by = EXCLUDED.approved_by, approved_at = now(),
                       run_id = EXCLUDED.run_id, failures = EXCLUDED.failures
               RETURNING id, site, url, content_hash, reason, approved_by, approved_at, run_id, failures""",
            (site, url, content_hash, reason, approved_by, run_id, json.dumps(failures)),
        ).fetchone()


def listing(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    """Every approval, by site and URL, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, site, url, content_hash, reason, approved_by, approved_at, run_id, failures
               FROM sitekb.quarantine_approvals WHERE %(site)s::text IS NULL OR site = %(site)s
               ORDER BY site, url, approved_at DESC""",
            {"site": site},
        ).fetchall()
