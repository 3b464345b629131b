"""The reads of the Knowledge view (:mod:`sitekb.orchestration.knowledge`): sites, aliases, snapshot history,
and what a snapshot's run held back.

Read-only summaries over ``sitekb.snapshots``, ``sitekb.aliases``,
``sitekb.alias_events``, ``sitekb.runs``, ``sitekb.documents`` and
``sitekb.exclusions``, shaped for a page: small rows, lists bounded by
``limit`` with the total beside them. Writes (a rollback) and the diff go
through :mod:`sitekb.store.snapshots` and :mod:`sitekb.store.snapshot_tables`
like every other door's.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row


def sites(conn: psycopg.Connection) -> list[dict]:
    """Every site with a run or a snapshot: its newest run, snapshot count and aliases (name -> snapshot id)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """WITH s AS (SELECT site, count(*) AS snapshots, max(snapshot_id) AS newest_snapshot
                          FROM sitekb.snapshots GROUP BY site),
                    r AS (SELECT DISTINCT ON (site) site, run_id, status, started_at, finished_at
                          FROM sitekb.runs ORDER BY site, started_at DESC, run_id DESC),
                    a AS (SELECT site, jsonb_object_agg(alias, snapshot_id) AS aliases
                          FROM sitekb.aliases GROUP BY site)
               SELECT site, coalesce(s.snapshots, 0) AS snapshots, s.newest_snapshot,
                      coalesce(a.aliases, '{}'::jsonb) AS aliases,
                      r.run_id AS last_run_id, r.status AS last_run_status,
                      r.started_at AS last_run_started_at, r.finished_at AS last_run_finished_at
               FROM s FULL JOIN r USING (site) LEFT JOIN a USING (site)
               ORDER BY site"""
        ).fetchall()


def aliases(conn: psycopg.Connection, site: str) -> list[dict]:
    """The site's aliases: the snapshot each points to, its state and golden score, and the move that set it."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT a.alias, a.snapshot_id, a.updated_at, s.state, s.created_at AS snapshot_created_at,
                      s.quality -> 'golden' AS golden, e.from_snapshot, e.actor, e.reason, e.moved_at
               FROM sitekb.aliases a JOIN sitekb.snapshots s USING (snapshot_id)
               LEFT JOIN LATERAL (
                   SELECT from_snapshot, actor, reason, moved_at FROM sitekb.alias_events e
                   WHERE e.site = a.site AND e.alias = a.alias AND e.to_snapshot = a.snapshot_id
                   ORDER BY e.id DESC LIMIT 1) e ON true
               WHERE a.site = %s ORDER BY a.alias""",
            (site,),
        ).fetchall()


def snapshot_history(conn: psycopg.Connection, site: str, limit: int = 50) -> list[dict]:
    """The site's snapshots, newest first, each with its quality summary, golden score and diff counts.

    ``quality`` keeps the parts a person reads (golden, documents, failures,
    totals); the Great Expectations results stay in the record
    (``sitekb snapshots show ID``). ``diff`` counts pages per kind against the
    snapshot that was live when it was evaluated.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT s.snapshot_id, s.state, s.run_id, s.created_at, s.built_at, s.pinned,
                      s.table_name IS NOT NULL AS has_table, s.embedding_model, s.dimensions, s.counts,
                      jsonb_build_object('golden', s.quality -> 'golden', 'documents', s.quality -> 'documents',
                                         'failures', coalesce(s.quality -> 'failures', '[]'::jsonb),
                                         'totals', s.quality -> 'totals') AS quality,
                      s.reasons,
                      jsonb_build_object(
                          'against', s.diff -> 'against',
                          'added', jsonb_array_length(coalesce(s.diff -> 'added', '[]'::jsonb)),
                          'removed', jsonb_array_length(coalesce(s.diff -> 'removed', '[]'::jsonb)),
                          'changed', jsonb_array_length(coalesce(s.diff -> 'changed', '[]'::jsonb)),
                          'chunks_added', s.diff -> 'chunks_added',
                          'chunks_removed', s.diff -> 'chunks_removed') AS diff,
                      coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM sitekb.aliases a
                                WHERE a.snapshot_id = s.snapshot_id), '{}') AS aliases
               FROM sitekb.snapshots s WHERE s.site = %s
               ORDER BY s.snapshot_id DESC LIMIT %s""",
            (site, limit),
        ).fetchall()


def alias_target(conn: psycopg.Connection, site: str, alias: str) -> int | None:
    """The snapshot ``alias`` of ``site`` points to, or None when the site has no such alias."""
    row = conn.execute("SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s",
                       (site, alias)).fetchone()
    return row[0] if row else None


def held_back(conn: psycopg.Connection, run_id: str, limit: int = 200) -> dict:
    """What the run's quality gate held back: quarantined documents and those an approval let through.

    ``{"total": n, "quarantined": n, "approved": n, "documents": [...]}``, at
    most ``limit`` documents, quarantined ones first.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        totals = cur.execute(
            """SELECT count(*) FILTER (WHERE status = 'quarantined') AS quarantined,
                      count(*) FILTER (WHERE status = 'accepted' AND approval_id IS NOT NULL) AS approved
               FROM sitekb.documents WHERE run_id = %s""",
            (run_id,),
        ).fetchone()
        rows = cur.execute(
            """SELECT d.url, d.title, d.status, d.failures, d.word_count,
                      q.reason AS approval_reason, q.approved_by, q.approved_at
               FROM sitekb.documents d LEFT JOIN sitekb.quarantine_approvals q ON q.id = d.approval_id
               WHERE d.run_id = %s AND (d.status = 'quarantined' OR d.approval_id IS NOT NULL)
               ORDER BY d.status DESC, d.url LIMIT %s""",
            (run_id, limit),
        ).fetchall()
    return {**totals, "total": totals["quarantined"] + totals["approved"], "documents": rows}


def run_exclusions(conn: psycopg.Connection, run_id: str, limit: int = 200) -> dict:
    """The URLs the run's crawl left out: counts per rule and at most ``limit`` rows (by rule, then URL)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rules = cur.execute(
            "SELECT rule, count(*) AS n FROM sitekb.exclusions WHERE run_id = %s GROUP BY rule ORDER BY rule",
            (run_id,),
        ).fetchall()
        rows = cur.execute(
            """SELECT url, rule, detail, excluded_at FROM sitekb.exclusions WHERE run_id = %s
               ORDER BY rule, url LIMIT %s""",
            (run_id, limit),
        ).fetchall()
    by_rule = {r["rule"]: r["n"] for r in rules}
    return {"total": sum(by_rule.values()), "by_rule": by_rule, "exclusions": rows}
