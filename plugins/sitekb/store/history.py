"""How much history a site keeps: run records and the ledgers written per run, bounded.

Every run writes a run row, its crawl statistics, its exclusions (up to 1000
per rule), its fetch failures and its embedding spend. Kept forever they grow
with every refresh, so :func:`trim` deletes them for runs past the site's
newest ``history_runs`` (the site config's setting), except a run that is
still needed:

- a run still marked running;
- a run whose snapshot still has its table, is pinned or is aliased (its
  record explains a snapshot a frontend may read);
- a run whose documents are still kept (:func:`sitekb.store.documents.drop_unneeded`);
- the site's newest full crawl (it decides when the next one is due).

The snapshot records of trimmed runs go too (their tables are long gone). The
alias history (``sitekb.alias_events``: who published or rolled back what,
and why) and quarantine approvals are the audit trail and are never trimmed;
they grow with decisions, not with runs.
"""

from __future__ import annotations

import psycopg

_KEPT = """
    SELECT run_id FROM (SELECT run_id FROM sitekb.runs WHERE site = %(site)s
                        ORDER BY started_at DESC, run_id DESC LIMIT %(keep)s) AS newest
    UNION SELECT run_id FROM sitekb.runs WHERE site = %(site)s AND status = 'running'
    UNION SELECT s.run_id FROM sitekb.snapshots s
          WHERE s.site = %(site)s AND (s.table_name IS NOT NULL OR s.pinned OR s.state = 'building'
                OR EXISTS (SELECT 1 FROM sitekb.aliases a WHERE a.snapshot_id = s.snapshot_id))
    UNION SELECT DISTINCT run_id FROM sitekb.documents WHERE site = %(site)s
    UNION SELECT run_id FROM (SELECT run_id FROM sitekb.crawl_stats WHERE site = %(site)s AND full_crawl
                              ORDER BY finished_at DESC LIMIT 1) AS last_full
"""

# Per-run ledgers first, the run rows last. Each deletes the site's rows of runs outside the kept set.
_TRIMMED = {
    "exclusions": "DELETE FROM sitekb.exclusions WHERE site = %(site)s AND run_id NOT IN (kept)",
    "fetch_failures": "DELETE FROM sitekb.fetch_failures WHERE site = %(site)s AND run_id NOT IN (kept)",
    "crawl_stats": "DELETE FROM sitekb.crawl_stats WHERE site = %(site)s AND run_id NOT IN (kept)",
    "embedding_spend": """DELETE FROM sitekb.embedding_spend WHERE run_id IN (
                              SELECT run_id FROM sitekb.runs WHERE site = %(site)s AND run_id NOT IN (kept))""",
    "snapshots": """DELETE FROM sitekb.snapshots s WHERE s.site = %(site)s AND s.run_id NOT IN (kept)
                      AND s.table_name IS NULL AND NOT s.pinned
                      AND NOT EXISTS (SELECT 1 FROM sitekb.aliases a WHERE a.snapshot_id = s.snapshot_id)""",
    "runs": "DELETE FROM sitekb.runs WHERE site = %(site)s AND run_id NOT IN (kept)",
}


def trim(conn: psycopg.Connection, site: str, keep_runs: int) -> dict[str, int]:
    """Delete the history of the site's runs past the newest ``keep_runs`` that nothing needs; rows deleted per table.

    Run inside the caller's transaction (a run start, under the site's run lock).
    """
    params = {"site": site, "keep": max(1, int(keep_runs))}
    deleted = {}
    for table, statement in _TRIMMED.items():
        # The kept set is computed again per statement: each deletion leaves it as it was.
        cur = conn.execute(f"WITH kept AS ({_KEPT}) " + statement.replace("(kept)", "(SELECT run_id FROM kept)"),
                           params)
        deleted[table] = cur.rowcount
    return deleted
