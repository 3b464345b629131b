"""The audit log: who published, rolled back, approved, rejected, pinned, pruned and ran what, and why.

Most acts already leave a record where they happen: alias moves with their
actor and reason (``sitekb.alias_events``: published, approved, rejected,
rolled back), content owners' approvals of quarantined pages
(``sitekb.quarantine_approvals``) and run starts (``sitekb.runs``, with who or
what started them). :func:`record` adds the acts that left none
(``sitekb.audit_events``: pinning, unpinning and pruning snapshots by hand), and
:func:`events` reads them all as one list, newest first.
"""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

ACTIONS = ("published", "approved", "rejected", "rolled back", "approved page", "ran", "pinned", "unpinned",
           "pruned")

# format()'s %s are written %%s: the statement is run with parameters.
_EVENTS = """
    SELECT e.moved_at AS at, e.site,
           CASE e.decision WHEN 'moved' THEN 'published' WHEN 'rolled_back' THEN 'rolled back'
                ELSE e.decision END AS action,
           e.actor, e.reason,
           CASE WHEN e.decision = 'rejected' THEN format('snapshot %%s (alias %%s stayed at %%s)', e.to_snapshot,
                                                         e.alias, coalesce(e.from_snapshot::text, 'none'))
                ELSE format('%%s: snapshot %%s -> %%s', e.alias, coalesce(e.from_snapshot::text, 'none'), e.to_snapshot)
           END AS target
    FROM sitekb.alias_events e
    UNION ALL
    SELECT a.approved_at, a.site, 'approved page', a.approved_by, a.reason, a.url
    FROM sitekb.quarantine_approvals a
    UNION ALL
    SELECT r.started_at, r.site, 'ran', coalesce(nullif(r.params ->> 'actor', ''), 'unknown'),
           coalesce(r.params ->> 'reason', ''), format('run %%s (%%s)', r.run_id, r.status)
    FROM sitekb.runs r
    UNION ALL
    SELECT x.at, x.site, x.action, x.actor, x.reason,
           CASE WHEN x.snapshot_id IS NOT NULL THEN format('snapshot %%s', x.snapshot_id)
                ELSE x.details ->> 'target' END
    FROM sitekb.audit_events x"""


def record(conn: psycopg.Connection, site: str, action: str, actor: str, *, snapshot_id: int | None = None,
           reason: str = "", details: dict | None = None) -> None:
    """Note an act no other table records (pinning, unpinning, pruning), in the caller's transaction."""
    conn.execute(
        """INSERT INTO sitekb.audit_events (site, action, snapshot_id, actor, reason, details)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (site, action, snapshot_id, actor, reason, json.dumps(details or {})))


def events(conn: psycopg.Connection, *, site: str | None = None, action: str | None = None,
           since: datetime | None = None, limit: int = 100) -> list[dict]:
    """Every recorded act, newest first: at, site, action, actor, reason, target."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT * FROM ({_EVENTS}) e
                WHERE (%(site)s::text IS NULL OR e.site = %(site)s)
                  AND (%(action)s::text IS NULL OR e.action = %(action)s)
                  AND (%(since)s::timestamptz IS NULL OR e.at >= %(since)s)
                ORDER BY e.at DESC LIMIT %(limit)s""",
            {"site": site, "action": action, "since": since, "limit": limit}).fetchall()
