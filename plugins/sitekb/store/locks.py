"""The advisory locks sitekb serialises its writers with, taken with a bounded wait.

Advisory locks are open to every role of the database (Postgres grants them
to PUBLIC), so a frontend's session, or anyone holding a password, could
take sitekb's keys and make a publish, a run start or a migration wait
forever. :func:`hold` waits at most :data:`WAIT`, then fails with a
:class:`~sitekb.errors.SitekbError` that names who holds the lock (role,
application, pid, since when), so an operator can end that session.

Keys: ``(hashtext(namespace), hashtext(name))`` per site
(``sitekb.aliases``, ``sitekb.runs``), or one bigint (the schema).
"""

from __future__ import annotations

import psycopg

from sitekb.errors import SitekbError

WAIT = "30s"   # how long a writer waits for a lock before it says who holds it


def hold(conn: psycopg.Connection, what: str, namespace: str | int, name: str | None = None, *,
         wait: str | None = None) -> None:
    """Take the transaction-level lock ``(namespace, name)`` (or the bigint ``namespace``) within ``wait``.

    ``wait`` defaults to :data:`WAIT` (read when called, so a test can shorten it).
    """
    wait = wait or WAIT
    if name is None:
        keys: tuple = (int(namespace),)
        lock, where = "SELECT pg_advisory_xact_lock(%s)", \
            "l.objsubid = 1 AND (l.classid::bigint << 32) + l.objid::bigint = %s"
    else:
        k1, k2 = conn.execute("SELECT hashtext(%s), hashtext(%s)", (namespace, name)).fetchone()
        keys = (k1, k2)
        lock, where = "SELECT pg_advisory_xact_lock(%s, %s)", \
            "l.objsubid = 2 AND l.classid::bigint = (%s::bigint + 4294967296) %% 4294967296 " \
            "AND l.objid::bigint = (%s::bigint + 4294967296) %% 4294967296"
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    try:
        with conn.transaction():   # a savepoint: a timeout leaves the caller's transaction usable
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait,))
            conn.execute(lock, keys)
    except psycopg.errors.LockNotAvailable:
        holders = conn.execute(
            f"""SELECT a.usename, coalesce(nullif(a.application_name, ''), '-'), a.pid, a.state,
                       to_char(a.xact_start, 'YYYY-MM-DD HH24:MI:SS')
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() AND {where}""",
            keys).fetchall()
        who = "; ".join(f"role {u}, application {app}, pid {pid} ({state} since {since})"
                        for u, app, pid, state, since in holders) or "a session that has ended"
        raise SitekbError(
            f"{what} waited {wait} for its lock, held by {who}. If that session is stuck or not sitekb's, "
            "end it (SELECT pg_terminate_backend(PID)) and try again"
        ) from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
