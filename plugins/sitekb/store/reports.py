"""The reads of the HTML report (:mod:`sitekb.report_html`): a site's runs with their snapshots.

Read-only, over ``sitekb.runs``, ``sitekb.snapshots``, ``sitekb.aliases`` and
``sitekb.snapshot_coverage``; bounded by ``limit``. The snapshot history, the
spend and one run's summary come from the modules that own them
(:mod:`sitekb.store.knowledge`, :mod:`sitekb.store.embeddings`, :mod:`sitekb.report`).
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row


def runs_of_site(conn: psycopg.Connection, site: str, limit: int = 30) -> list[dict]:
    """The site's runs, newest first, each with its stage records and its snapshot (id, state, counts,
    quality verdict, rejection reasons, aliases; None when the run built none)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT r.run_id, r.status, r.error, r.started_at, r.finished_at, r.stages, r.params,
                      s.snapshot_id, s.state AS snapshot_state, s.counts AS snapshot_counts,
                      s.reasons AS snapshot_reasons,
                      jsonb_build_object('golden', s.quality -> 'golden', 'documents', s.quality -> 'documents',
                                         'failures', s.quality -> 'failures',
                                         'data_docs', s.quality -> 'data_docs') AS snapshot_quality,
                      coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM sitekb.aliases a
                                WHERE a.snapshot_id = s.snapshot_id), '{}') AS aliases
               FROM sitekb.runs r LEFT JOIN sitekb.snapshots s USING (run_id)
               WHERE r.site = %s
               ORDER BY r.started_at DESC, r.run_id DESC LIMIT %s""",
            (site, limit),
        ).fetchall()


def site_exists(conn: psycopg.Connection, site: str) -> bool:
    """Whether the site has a run or a snapshot."""
    return conn.execute(
        """SELECT EXISTS (SELECT 1 FROM sitekb.runs WHERE site = %(s)s)
                  OR EXISTS (SELECT 1 FROM sitekb.snapshots WHERE site = %(s)s)""", {"s": site}).fetchone()[0]


def known_sites(conn: psycopg.Connection) -> list[str]:
    """Every site with a run or a snapshot, by name."""
    return [row[0] for row in conn.execute(
        "SELECT site FROM sitekb.runs UNION SELECT site FROM sitekb.snapshots ORDER BY 1")]


def site_of_run(conn: psycopg.Connection, run_id: str) -> str | None:
    """The site a run belongs to (None: no such run)."""
    row = conn.execute("SELECT site FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()
    return row[0] if row else None
