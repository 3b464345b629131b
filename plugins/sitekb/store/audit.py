"""The audit log: who published, rolled back, approved, rejected, pinned, pruned and ran what, and why.

Most acts already leave a record where they happen: alias moves with their
actor and reason (``sitekb.alias_events``: published, approved, rejected,
rolled back), content owners' approvals of quarantined pages
(``sitekb.quarantine_approvals``) and run starts (``sitekb.runs``, with who or
what started them; a run whose config changed the rules of what the bot may
know, an exclusion pattern, an opt-out setting, a quality threshold, a
messaging rule, is also listed as "changed rules", naming the sections, by its
actor). :func:`record` adds the acts that left none
(``sitekb.audit_events``: pinning, unpinning and pruning snapshots by hand; adding,
removing and expiring content owners' corrections, :mod:`sitekb.store.corrections`), and
:func:`events` reads them all as one list, newest first.
"""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

ACTIONS = ("published", "approved", "rejected", "rolled back", "approved page", "ran", "changed rules", "pinned",
           "unpinned", "pruned", "corrected", "correction removed", "correction expired")

# The parts of a site config that decide what the bot may know: a run that starts with any of them changed
# (from the site's run before) is listed as "changed rules" by whoever started it. Exclusion rules live in
# config files, so the run that first applies them is when, and its actor who, excluded.
RULE_SECTIONS = (("crawl.include_patterns", "{crawl,include_patterns}"),
                 ("crawl.exclude_patterns", "{crawl,exclude_patterns}"),
                 ("crawl.max_pages", "{crawl,max_pages}"), ("crawl.max_depth", "{crawl,max_depth}"),
                 ("opt_out", "{opt_out}"), ("quality", "{quality}"), ("messaging", "{messaging}"),
                 ("chunking", "{chunking}"), ("embedding", "{embedding}"), ("golden_questions", "{golden_questions}"))
_CHANGED = ", ".join(f"CASE WHEN r.config #> '{path}' IS DISTINCT FROM r.previous #> '{path}' THEN '{name}' END"
                     for name, path in RULE_SECTIONS)

# format()'s %s are written %%s: the statement is run with parameters. "changed rules" compares each run's
# config with the site's run before it (dry runs left out), section by section (RULE_SECTIONS).
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
    SELECT c.started_at, c.site, 'changed rules', c.actor, c.reason, format('run %%s: %%s', c.run_id, c.changed)
    FROM (SELECT r.started_at, r.site, r.run_id, coalesce(nullif(r.params ->> 'actor', ''), 'unknown') AS actor,
                 coalesce(r.params ->> 'reason', '') AS reason, concat_ws(', ', {changed}) AS changed
          FROM (SELECT *, lag(config) OVER (PARTITION BY site ORDER BY started_at) AS previous
                FROM sitekb.runs WHERE NOT coalesce((params ->> 'dry_run')::boolean, false)) r
          WHERE r.previous IS NOT NULL) c
    WHERE c.changed <> ''
    UNION ALL
    SELECT x.at, x.site, x.action, x.actor, x.reason,
           CASE WHEN x.snapshot_id IS NOT NULL THEN format('snapshot %%s', x.snapshot_id)
                ELSE x.details ->> 'target' END
    FROM sitekb.audit_events x""".replace("{changed}", _CHANGED)


def record(conn: psycopg.Connection, site: str, action: str, actor: str, *, snapshot_id: int | None = None,
           reason: str = "", details: dict | None = None) -> None:
    """Note an act no other table records (pinning, unpinning, pruning, corrections), in the caller's transaction.

    ``details["target"]`` is what the listing names when there is no snapshot (a corrected page's URL).
    """
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
