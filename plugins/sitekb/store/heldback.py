"""What one run held back from its snapshot, read from the run's ledgers (SQL only; see :mod:`sitekb.heldback`).

A run records what it left out as it goes: the crawler's exclusions (one row
per URL and rule; an excluded page keeps no validators, so every crawl fetches
it again and records its rule again), its fetch failures, the error statuses
in ``sitekb.pages`` (a 404 row carries the run that saw it) and the quality
gate's verdict per document. These functions read one run's rows of each.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row


def exclusions(conn: psycopg.Connection, site: str, run_id: str) -> list[dict]:
    """The run's exclusions, one row per URL: the newest rule the run applied to it."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT DISTINCT ON (url) url, rule, detail, run_id, excluded_at AS at
               FROM sitekb.exclusions WHERE site = %s AND run_id = %s
               ORDER BY url, excluded_at DESC, id DESC""",
            (site, run_id),
        ).fetchall()


def quarantined(conn: psycopg.Connection, run_id: str) -> list[dict]:
    """The run's quarantined documents and those an approval let through, with the approval."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT d.site, d.url, d.title, d.status, d.failures, d.run_id, d.content_hash, d.word_count,
                      a.id AS approval_id, a.reason AS approval_reason, a.approved_by, a.approved_at
               FROM sitekb.documents d LEFT JOIN sitekb.quarantine_approvals a ON a.id = d.approval_id
               WHERE d.run_id = %s AND (d.status = 'quarantined' OR d.approval_id IS NOT NULL)
               ORDER BY d.status DESC, d.url""",
            (run_id,),
        ).fetchall()


def errors(conn: psycopg.Connection, site: str, run_id: str) -> list[dict]:
    """Pages the run found answering an error status, and URLs it could not fetch at all.

    A failed fetch of a URL that also has a page row of the run (a retried
    crawl reached it after all) is not listed.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT url, status, NULL::text AS kind, NULL::text AS detail, fetched_at AS at
               FROM sitekb.pages WHERE site = %(site)s AND last_run_id = %(run)s AND status >= 400
               UNION ALL
               SELECT f.url, NULL, f.kind, f.detail, f.failed_at FROM sitekb.fetch_failures f
               WHERE f.site = %(site)s AND f.run_id = %(run)s
                 AND NOT EXISTS (SELECT 1 FROM sitekb.pages p
                                 WHERE p.site = f.site AND p.url = f.url AND p.last_run_id = f.run_id)
               ORDER BY url""",
            {"site": site, "run": run_id},
        ).fetchall()


def unrecorded_exclusions(conn: psycopg.Connection, run_id: str) -> int:
    """Exclusions the crawl counted past the per-rule cap (``SITEKB_MAX_EXCLUSIONS_PER_RULE``) without a row."""
    row = conn.execute("SELECT coalesce((stats ->> 'exclusions_unrecorded')::int, 0) FROM sitekb.crawl_stats "
                       "WHERE run_id = %s", (run_id,)).fetchone()
    return row[0] if row else 0


def live_run(conn: psycopg.Connection, site: str, alias: str) -> tuple[int, str] | None:
    """(snapshot id, run id) the site's ``alias`` points to, or None."""
    return conn.execute(
        """SELECT s.snapshot_id, s.run_id FROM sitekb.aliases a JOIN sitekb.snapshots s USING (snapshot_id)
           WHERE a.site = %s AND a.alias = %s""",
        (site, alias),
    ).fetchone()


def snapshot_run(conn: psycopg.Connection, snapshot_id: int) -> tuple[str, str, dict] | None:
    """(site, run id, stored diff summary) of a snapshot, or None."""
    return conn.execute("SELECT site, run_id, diff FROM sitekb.snapshots WHERE snapshot_id = %s",
                        (snapshot_id,)).fetchone()


def run_site(conn: psycopg.Connection, run_id: str) -> str | None:
    """The site of a run: its run record, or (a bare crawl) its ledgers."""
    row = conn.execute(
        """SELECT site FROM sitekb.runs WHERE run_id = %(run)s
           UNION ALL SELECT site FROM sitekb.exclusions WHERE run_id = %(run)s
           UNION ALL SELECT site FROM sitekb.pages WHERE last_run_id = %(run)s LIMIT 1""",
        {"run": run_id},
    ).fetchone()
    return row[0] if row else None


def run_snapshot(conn: psycopg.Connection, run_id: str) -> tuple[int, str, dict] | None:
    """(snapshot id, state, stored diff summary) of the snapshot a run built, or None."""
    return conn.execute("SELECT snapshot_id, state, diff FROM sitekb.snapshots WHERE run_id = %s",
                        (run_id,)).fetchone()


def sites(conn: psycopg.Connection) -> list[str]:
    """Every site with a run or a crawl ledger."""
    return [r[0] for r in conn.execute(
        "SELECT site FROM sitekb.runs UNION SELECT site FROM sitekb.exclusions ORDER BY 1")]


def newest_run(conn: psycopg.Connection, site: str, *, validated: bool = False) -> str | None:
    """The site's newest run (one that got to the validate stage, when asked), or its newest crawl's."""
    row = conn.execute(
        f"""SELECT run_id FROM sitekb.runs WHERE site = %s {"AND stages ? 'validate'" if validated else ""}
            AND NOT coalesce((params ->> 'dry_run')::boolean, false)
            ORDER BY started_at DESC, run_id DESC LIMIT 1""",
        (site,),
    ).fetchone()
    if row is None and not validated:
        row = conn.execute("SELECT run_id FROM sitekb.exclusions WHERE site = %s ORDER BY excluded_at DESC, id DESC "
                           "LIMIT 1", (site,)).fetchone()
    return row[0] if row else None


def newer_runs(conn: psycopg.Connection, site: str, run_id: str) -> list[dict]:
    """Runs of the site started after ``run_id`` (dry runs left out), newest first, with their snapshot's state."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT r.run_id, r.status, s.snapshot_id, s.state FROM sitekb.runs r
               LEFT JOIN sitekb.snapshots s ON s.run_id = r.run_id
               WHERE r.site = %(site)s AND NOT coalesce((r.params ->> 'dry_run')::boolean, false)
                 AND r.started_at > (SELECT started_at FROM sitekb.runs WHERE run_id = %(run)s)
               ORDER BY r.started_at DESC""",
            {"site": site, "run": run_id},
        ).fetchall()
