"""The locks sitekb serialises its writers with: a row of ``sitekb.locks`` per key, taken with a bounded wait.

A writer (a run start, an alias move or retention, a migration) locks the
row of its key ``FOR UPDATE`` for the length of its transaction. Only a role
that may update ``sitekb.locks`` can take such a lock, so a frontend's role
(``sitekb_reader``, which has no USAGE on schema ``sitekb``) cannot stall the
pipeline. Advisory locks, which sitekb used before, are open to every role.

A lock held by another sitekb process (a second run of the same site, an
operator's rollback) is waited for at most :data:`WAIT`; then
:func:`hold` fails with a :class:`~sitekb.errors.SitekbError` that names the
sessions holding sitekb locks (role, application, pid, since when), so an
operator can end a stuck one.

Keys: ``<namespace>/<name>`` per site (``sitekb.aliases/<site>``,
``sitekb.runs/<site>``), or ``schema`` for migrations. Before migration 0013
created the table (a first install) the schema lock is an advisory lock: no
reader role exists in that database yet.
"""

from __future__ import annotations

import psycopg

from sitekb.errors import SitekbError

WAIT = "30s"   # how long a writer waits for a lock before it says who holds it
SCHEMA_KEY = "schema"


def hold(conn: psycopg.Connection, what: str, namespace: str, name: str, *, wait: str | None = None) -> None:
    """Lock the key ``<namespace>/<name>`` until the caller's transaction ends, waiting at most ``wait``.

    ``wait`` defaults to :data:`WAIT` (read when called, so a test can shorten it).
    """
    take(conn, what, f"{namespace}/{name}", wait=wait)


def take(conn: psycopg.Connection, what: str, key: str, *, wait: str | None = None) -> None:
    """Lock the row of ``key`` (created on first use) until the caller's transaction ends."""
    wait = wait or WAIT
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    try:
        with conn.transaction():   # a savepoint: a timeout leaves the caller's transaction usable
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait,))
            # A first use inserts the row; a concurrent first use waits on that insert, within lock_timeout.
            conn.execute("INSERT INTO sitekb.locks (key) VALUES (%s) ON CONFLICT (key) DO NOTHING", (key,))
            conn.execute("SELECT 1 FROM sitekb.locks WHERE key = %s FOR UPDATE", (key,))
    except psycopg.errors.LockNotAvailable:
        raise SitekbError(
            f"{what} waited {wait} for its lock, held by {_holders(conn)}. If that session is stuck, "
            "end it (SELECT pg_terminate_backend(PID)) and try again"
        ) from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))


def hold_schema(conn: psycopg.Connection, what: str, *, wait: str, advisory_key: int) -> None:
    """The migration lock: the ``schema`` row once ``sitekb.locks`` exists, before that an advisory lock."""
    if conn.execute("SELECT to_regclass('sitekb.locks') IS NOT NULL").fetchone()[0]:
        take(conn, what, SCHEMA_KEY, wait=wait)
        return
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait,))
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key,))
    except psycopg.errors.LockNotAvailable:
        raise SitekbError(f"{what} waited {wait} for another process migrating a new database; "
                          "try again when it has finished") from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))


def _holders(conn: psycopg.Connection) -> str:
    """The other sessions whose open transaction locked rows of ``sitekb.locks`` (row locks are not listed
    per row, so every such session is named)."""
    holders = conn.execute(
        """SELECT DISTINCT a.usename, coalesce(nullif(a.application_name, ''), '-'), a.pid, a.state,
                  to_char(a.xact_start, 'YYYY-MM-DD HH24:MI:SS')
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'relation' AND l.relation = 'sitekb.locks'::regclass AND l.granted
             AND l.mode = 'RowShareLock' AND l.pid <> pg_backend_pid()
             AND NOT EXISTS (SELECT 1 FROM pg_locks w WHERE w.pid = l.pid AND NOT w.granted)  -- not a waiter
           ORDER BY a.pid""").fetchall()
    return "; ".join(f"role {u}, application {app}, pid {pid} ({state} since {since})"
                     for u, app, pid, state, since in holders) or "a session that has ended"
