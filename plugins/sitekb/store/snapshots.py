"""Snapshot records, aliases and retention (``sitekb.snapshots``, ``sitekb.aliases``, ``sitekb.alias_events``).

A snapshot is immutable once built (its table: :mod:`sitekb.store.snapshot_tables`).
It records the run that made it, the site config hash, the extractor and
chunker versions, the embedding model, dimensions and server, counts, the
quality summary and the diff. Aliases (``production``, ``staging``, ...) are
rows in ``sitekb.aliases``; moving one is a single UPDATE in one transaction,
so publish and rollback take the same time whatever the snapshot size, and a
reader sees either the old snapshot or the new one, never a mix. Every move
is written to ``sitekb.alias_events``.

Lifecycle: building → validated → published / rejected → retired. A
published or retired snapshot is never rebuilt; a pinned one and any that an
alias points to survive retention. Alias moves and retention of one site are
serialised by a lock per site (:mod:`sitekb.store.locks`), so a publish never points at a table that
retention is dropping.

Frontends read snapshots through the SQL API (``sitekb_api``), which only
shows published and earlier-published snapshots.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import class_row, dict_row

from sitekb.errors import ConfigError, NotFound, SitekbError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.store import audit, locks, snapshot_tables

STATES = ("building", "validated", "published", "rejected", "retired")
# Readers hold ACCESS SHARE locks; retention gives up on a busy table rather than
# queueing every later reader behind its DROP. It is dropped on the next run.
RETENTION_LOCK_TIMEOUT = "2s"


@dataclass
class Snapshot:
    snapshot_id: int
    site: str
    run_id: str
    state: str
    table_name: str | None
    embedding_provider: str
    embedding_model: str
    dimensions: int
    tokenizer: str
    config_hash: str
    extractor_version: str
    chunker_version: str
    counts: dict
    quality: dict
    diff: dict
    reasons: list
    pinned: bool
    created_at: datetime
    built_at: datetime | None
    embedding_base_url: str | None = None      # OpenAI-compatible server the vectors came from
    embedding_api_key_env: str | None = None   # the variable holding its key (a name, never a key)
    text_configs: list[str] | None = None      # text-search configurations of its chunks (None: english)
    corpus_chunks: int | None = None           # BM25 statistics: its chunks and the sum of their lengths
    corpus_length: float | None = None
    bm25_recipe: int | None = None             # how its postings counted terms (sitekb.bm25_recipe)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["created_at"] = self.created_at.isoformat()
        out["built_at"] = self.built_at.isoformat() if self.built_at else None
        return out


def get(conn: psycopg.Connection, snapshot_id: int) -> Snapshot:
    with conn.cursor(row_factory=class_row(Snapshot)) as cur:
        snap = cur.execute("SELECT * FROM sitekb.snapshots WHERE snapshot_id = %s", (snapshot_id,)).fetchone()
    if snap is None:
        raise NotFound(f"snapshot {snapshot_id} does not exist; `sitekb snapshots list` shows the known ones")
    return snap


def for_run(conn: psycopg.Connection, run_id: str) -> Snapshot | None:
    with conn.cursor(row_factory=class_row(Snapshot)) as cur:
        return cur.execute("SELECT * FROM sitekb.snapshots WHERE run_id = %s", (run_id,)).fetchone()


def list_snapshots(conn: psycopg.Connection, site: str | None = None, limit: int = 50) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT s.snapshot_id, s.site, s.state, s.run_id, s.embedding_model, s.dimensions, s.counts,
                      s.created_at, s.pinned,
                      coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases
               FROM sitekb.snapshots s LEFT JOIN sitekb.aliases a USING (snapshot_id)
               WHERE %(site)s::text IS NULL OR s.site = %(site)s
               GROUP BY s.snapshot_id ORDER BY s.snapshot_id DESC LIMIT %(limit)s""",
            {"site": site, "limit": limit},
        ).fetchall()


def resolve(conn: psycopg.Connection, site: str, alias: str | None = DEFAULT_ALIAS,
            snapshot_id: int | None = None) -> Snapshot:
    """The snapshot a query should read: a pinned id, or what the alias points to."""
    if snapshot_id is not None:
        snap = get(conn, snapshot_id)
        if snap.state in ("building", "rejected") or snap.table_name is None:
            raise NotFound(f"snapshot {snapshot_id} is {snap.state}; only built, non-rejected snapshots can be queried")
        return snap
    row = conn.execute(
        "SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s", (site, alias)
    ).fetchone()
    if row is None:
        raise NotFound(
            f"site {site!r} has no snapshot published as {alias!r} yet. "
            f"Run `sitekb run {site}` to build and publish one."
        )
    return get(conn, row[0])


# -- building -------------------------------------------------------------

def create_record(conn: psycopg.Connection, *, site: str, run_id: str, provider: str, model: str,
                  dimensions: int, tokenizer: str, config_hash: str, extractor_version: str,
                  chunker_version: str, base_url: str | None = None, api_key_env: str | None = None) -> int:
    """The snapshot row of a run (created once; a retried task gets the same id).

    A snapshot that was ever published is immutable: retrying the build of its
    run is refused instead of rebuilding a table that frontends may read. A
    snapshot not yet published takes the values given now: a rerun from an
    earlier stage may have rebuilt its chunks under another config or embedder.
    ``base_url`` is recorded without any user and password in it (frontends see
    it): an OPENAI_BASE_URL that carries them is set where queries run, and wins.
    """
    base_url = without_credentials(base_url)
    row = conn.execute(
        """INSERT INTO sitekb.snapshots (site, run_id, embedding_provider, embedding_model, dimensions,
                                         tokenizer, config_hash, extractor_version, chunker_version,
                                         embedding_base_url, embedding_api_key_env)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (run_id) DO UPDATE SET state = 'building',
               embedding_provider = EXCLUDED.embedding_provider, embedding_model = EXCLUDED.embedding_model,
               dimensions = EXCLUDED.dimensions, tokenizer = EXCLUDED.tokenizer,
               config_hash = EXCLUDED.config_hash, extractor_version = EXCLUDED.extractor_version,
               chunker_version = EXCLUDED.chunker_version, embedding_base_url = EXCLUDED.embedding_base_url,
               embedding_api_key_env = EXCLUDED.embedding_api_key_env
               WHERE sitekb.snapshots.state IN ('building', 'validated', 'rejected')
           RETURNING snapshot_id""",
        (site, run_id, provider, model, dimensions, tokenizer, config_hash, extractor_version, chunker_version,
         base_url, api_key_env),
    ).fetchone()
    if row is None:
        existing = for_run(conn, run_id)
        raise SitekbError(
            f"snapshot {existing.snapshot_id} of run {run_id} is {existing.state} and immutable; "
            "start a new run to build a new snapshot"
        )
    return row[0]


def without_credentials(url: str | None) -> str | None:
    """``url`` without user and password: how a server URL is recorded (frontends see it)."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def set_state(conn: psycopg.Connection, snapshot_id: int, state: str, *, reasons: list | None = None,
              quality: dict | None = None, diff: dict | None = None, counts: dict | None = None) -> None:
    if state not in STATES:
        raise ValueError(f"unknown snapshot state {state!r}")
    with conn.transaction():
        conn.execute(
            """UPDATE sitekb.snapshots SET state = %s,
                      reasons = coalesce(%s::jsonb, reasons),
                      quality = coalesce(%s::jsonb, quality),
                      diff = coalesce(%s::jsonb, diff),
                      counts = counts || coalesce(%s::jsonb, '{}'::jsonb)
               WHERE snapshot_id = %s""",
            (state, _json(reasons), _json(quality), _json(diff), _json(counts), snapshot_id),
        )


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _lock_site(conn: psycopg.Connection, site: str) -> None:
    """Serialise alias moves and retention of one site (released at the end of the transaction)."""
    locks.hold(conn, f"moving an alias of site {site!r}", "sitekb.aliases", site)


# -- aliases --------------------------------------------------------------

def publish(conn: psycopg.Connection, snapshot_id: int, alias: str = DEFAULT_ALIAS, *,
            actor: str | None = None, reason: str = "", decision: str = "moved") -> int | None:
    """Point ``alias`` at the snapshot in one transaction; return the previous target.

    ``decision="approved"``: a content owner (``actor``) approved this move, ``reason`` says why.

    One row changes, so this takes the same time whatever the snapshot size,
    and a reader resolving the alias sees the old target or the new one.
    """
    if not alias or len(alias) > 63:
        raise ConfigError("an alias is a name of 1 to 63 characters, e.g. production or staging")
    site = get(conn, snapshot_id).site
    actor = actor or _actor()
    with conn.transaction():
        _lock_site(conn, site)
        # Re-read under the lock: retention may have dropped the table meanwhile.
        snap = get(conn, snapshot_id)
        if snap.state not in ("validated", "published", "retired") or snap.table_name is None:
            why = "its table was dropped by retention" if snap.table_name is None and snap.state == "retired" \
                else f"it is {snap.state}"
            raise SitekbError(
                f"snapshot {snapshot_id} cannot be published: {why}. Only validated or previously "
                "published snapshots that still have their table can be published; "
                "`sitekb snapshots list` shows them"
            )
        row = conn.execute(
            "SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s FOR UPDATE",
            (snap.site, alias),
        ).fetchone()
        previous = row[0] if row else None
        if previous == snapshot_id:
            return previous
        conn.execute(
            """INSERT INTO sitekb.aliases (site, alias, snapshot_id) VALUES (%s, %s, %s)
               ON CONFLICT (site, alias) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id, updated_at = now()""",
            (snap.site, alias, snapshot_id),
        )
        conn.execute("UPDATE sitekb.snapshots SET state = 'published' WHERE snapshot_id = %s", (snapshot_id,))
        if previous is not None:
            # The old target stays queryable by id until retention removes it.
            conn.execute(
                """UPDATE sitekb.snapshots SET state = 'retired'
                   WHERE snapshot_id = %s AND NOT EXISTS (
                       SELECT 1 FROM sitekb.aliases WHERE snapshot_id = %s)""",
                (previous, previous),
            )
        conn.execute(
            """INSERT INTO sitekb.alias_events (site, alias, from_snapshot, to_snapshot, actor, reason, decision)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (snap.site, alias, previous, snapshot_id, actor, reason, decision),
        )
    return previous


def reject(conn: psycopg.Connection, snapshot_id: int, alias: str = DEFAULT_ALIAS, *,
           actor: str, reason: str) -> None:
    """A content owner turned the snapshot down for ``alias``: the alias stays; the audit log says who and why."""
    snap = get(conn, snapshot_id)
    with conn.transaction():
        _lock_site(conn, snap.site)
        row = conn.execute("SELECT snapshot_id FROM sitekb.aliases WHERE site = %s AND alias = %s",
                           (snap.site, alias)).fetchone()
        conn.execute(
            """INSERT INTO sitekb.alias_events (site, alias, from_snapshot, to_snapshot, actor, reason, decision)
               VALUES (%s, %s, %s, %s, %s, %s, 'rejected')""",
            (snap.site, alias, row[0] if row else None, snapshot_id, actor, reason),
        )
        if snap.state == "validated":
            conn.execute(
                """UPDATE sitekb.snapshots SET state = 'rejected',
                          reasons = coalesce(reasons, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                              'check', 'approval', 'message', %s::text))
                   WHERE snapshot_id = %s""",
                (f"rejected by {actor}: {reason}", snapshot_id),
            )


def rollback_target(conn: psycopg.Connection, site: str, alias: str = DEFAULT_ALIAS) -> int | None:
    """The snapshot a rollback of ``alias`` would move to (None: nothing to roll back to).

    "Before" is the origin of the move that brought the alias to its current
    target, so a second rollback undoes the first; a snapshot an owner
    rejected, or one whose table retention dropped, is never a target.
    """
    current = resolve(conn, site, alias)
    row = conn.execute(
        """SELECT e.from_snapshot FROM sitekb.alias_events e
           JOIN sitekb.snapshots s ON s.snapshot_id = e.from_snapshot
           WHERE e.site = %s AND e.alias = %s AND e.to_snapshot = %s AND e.from_snapshot IS NOT NULL
             AND e.decision <> 'rejected' AND s.table_name IS NOT NULL AND s.state IN ('published', 'retired')
           ORDER BY e.id DESC LIMIT 1""",
        (site, alias, current.snapshot_id),
    ).fetchone()
    return row[0] if row else None


def rollback(conn: psycopg.Connection, site: str, alias: str = DEFAULT_ALIAS, *,
             actor: str | None = None, reason: str = "rollback") -> tuple[int, int]:
    """Move ``alias`` back to the snapshot it pointed to before (:func:`rollback_target`); return (from, to)."""
    current = resolve(conn, site, alias)
    target = rollback_target(conn, site, alias)
    if target is None:
        raise NotFound(
            f"alias {alias!r} of site {site!r} has no earlier snapshot to roll back to "
            "(none, or its table was dropped by retention); `sitekb snapshots history` shows the moves"
        )
    publish(conn, target, alias, actor=actor, reason=reason, decision="rolled_back")
    return current.snapshot_id, target


def history(conn: psycopg.Connection, site: str | None = None, alias: str | None = None,
            limit: int = 50) -> list[dict]:
    """Alias moves and decisions, newest first: who moved (approved, rejected) which alias, from which
    snapshot to which, when and why."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT id, site, alias, from_snapshot, to_snapshot, actor, reason, decision, moved_at
               FROM sitekb.alias_events
               WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(alias)s::text IS NULL OR alias = %(alias)s)
               ORDER BY id DESC LIMIT %(limit)s""",
            {"site": site, "alias": alias, "limit": limit},
        ).fetchall()


# -- pins and retention ---------------------------------------------------

def set_pinned(conn: psycopg.Connection, snapshot_id: int, pinned: bool, *, actor: str | None = None,
               reason: str = "") -> Snapshot:
    """Pin (keep through retention) or unpin a snapshot; pinning a dropped one is refused. Audited."""
    snap = get(conn, snapshot_id)
    with conn.transaction():
        _lock_site(conn, snap.site)
        snap = get(conn, snapshot_id)
        if pinned and snap.table_name is None:
            raise SitekbError(
                f"snapshot {snapshot_id} has no table any more (retention dropped it); it cannot be pinned"
            )
        conn.execute("UPDATE sitekb.snapshots SET pinned = %s WHERE snapshot_id = %s", (pinned, snapshot_id))
        audit.record(conn, snap.site, "pinned" if pinned else "unpinned", actor or _actor(),
                     snapshot_id=snapshot_id, reason=reason)
    return get(conn, snapshot_id)


def apply_retention(conn: psycopg.Connection, site: str, keep: int, *, actor: str | None = None) -> list[int]:
    """Drop the tables of snapshots beyond the newest ``keep`` that no alias points to and nobody pinned.

    The records stay (history and diffs keep their ids); ``table_name``
    becomes NULL and a published-then-retired snapshot stays ``retired``, a
    rejected one ``rejected``. Returns the ids whose tables were dropped.
    ``actor``: a person pruning by hand, recorded in the audit log (the
    retention every publish applies is the config's doing, and is not).
    """
    if keep < 1:
        raise ConfigError("retention must keep at least one snapshot")
    with conn.transaction():
        _lock_site(conn, site)
        doomed = [
            row[0]
            for row in conn.execute(
                """SELECT snapshot_id FROM sitekb.snapshots s
                   WHERE site = %s AND NOT pinned AND state <> 'building' AND table_name IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM sitekb.aliases a WHERE a.snapshot_id = s.snapshot_id)
                     AND snapshot_id NOT IN (
                         SELECT snapshot_id FROM sitekb.snapshots WHERE site = %s
                         ORDER BY snapshot_id DESC LIMIT %s)
                   ORDER BY snapshot_id""",
                (site, site, keep),
            )
        ]
        dropped = []
        for snapshot_id in doomed:
            try:
                with conn.transaction():  # a savepoint: a busy table is skipped, the rest still go
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", (RETENTION_LOCK_TIMEOUT,))
                    snapshot_tables.drop(conn, snapshot_id)
                    conn.execute(
                        """UPDATE sitekb.snapshots
                           SET state = CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'retired' END,
                               table_name = NULL
                           WHERE snapshot_id = %s""",
                        (snapshot_id,),
                    )
                dropped.append(snapshot_id)
            except psycopg.errors.LockNotAvailable:
                continue
        if actor is not None:
            audit.record(conn, site, "pruned", actor, reason=f"kept the newest {keep}",
                         details={"dropped": dropped, "target": "snapshots " + (", ".join(map(str, dropped)) or "none")})
    return dropped


def built_sites(conn: psycopg.Connection) -> list[str]:
    """The sites that have a snapshot with its rows."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT site FROM sitekb.snapshots WHERE table_name IS NOT NULL ORDER BY site")]


def compaction_targets(conn: psycopg.Connection, site: str) -> list[int]:
    """The snapshots of a site worth compacting: what its aliases point to and its newest built one."""
    return [row[0] for row in conn.execute(
        """SELECT snapshot_id FROM sitekb.aliases WHERE site = %(site)s
           UNION
           (SELECT snapshot_id FROM sitekb.snapshots WHERE site = %(site)s AND table_name IS NOT NULL
              AND state <> 'building' ORDER BY snapshot_id DESC LIMIT 1)
           ORDER BY 1""", {"site": site})]


def abandon_building(conn: psycopg.Connection, run_id: str) -> int | None:
    """A dead run's half-built snapshot: its table goes, its record says why; returns its id (None: nothing)."""
    row = conn.execute("SELECT snapshot_id, site FROM sitekb.snapshots WHERE run_id = %s AND state = 'building'",
                       (run_id,)).fetchone()
    if row is None:
        return None
    snapshot_id, site = row
    with conn.transaction():
        _lock_site(conn, site)
        snapshot_tables.drop(conn, snapshot_id)
        conn.execute(
            """UPDATE sitekb.snapshots SET state = 'rejected', table_name = NULL,
                      reasons = coalesce(reasons, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                          'check', 'run', 'message', 'its run stopped while it was being built'))
               WHERE snapshot_id = %s AND state = 'building'""",
            (snapshot_id,),
        )
    return snapshot_id


def current_actor() -> str:
    """Who is acting: the user running this process."""
    return _actor()


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
