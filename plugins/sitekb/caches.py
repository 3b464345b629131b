"""Pruning the content-addressed caches: embeddings and full-text vectors.

Both caches keep an entry for every distinct chunk sitekb ever embedded or
indexed, so a page that comes back, or a re-run of unchanged content, costs
nothing. Published snapshots do not need them (a snapshot table holds its own
copies), so an entry only saves work if some future run has the same content.
``prune`` drops entries that no staged chunk uses (after publishing, only the
latest run of each site keeps staged chunks) and that are older than a grace
period, which also covers runs in flight.
"""

from __future__ import annotations

import psycopg

DEFAULT_GRACE_DAYS = 30


def prune(conn: psycopg.Connection, older_than_days: int = DEFAULT_GRACE_DAYS, *, dry_run: bool = False) -> dict:
    """Delete (or with ``dry_run`` count) unused cache entries older than ``older_than_days``."""
    if older_than_days < 0:
        from sitekb.errors import ConfigError

        raise ConfigError("--older-than is a number of days, 0 or more")
    verb = "SELECT count(*) FROM" if dry_run else "DELETE FROM"
    params = {"days": older_than_days}
    with conn.transaction():
        embeddings = conn.execute(
            f"""{verb} sitekb.embedding_cache e
                WHERE e.created_at < now() - make_interval(days => %(days)s)
                  AND NOT EXISTS (SELECT 1 FROM sitekb.chunks c WHERE c.text_hash = e.text_hash)""",
            params,
        )
        embeddings = embeddings.fetchone()[0] if dry_run else embeddings.rowcount
        fulltext = conn.execute(
            f"""{verb} sitekb.fulltext_cache f
                WHERE f.created_at < now() - make_interval(days => %(days)s)
                  AND NOT EXISTS (
                      SELECT 1 FROM sitekb.chunks c
                      JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
                      WHERE sitekb.fulltext_key(d.title, c.heading_path, c.text) = f.key)""",
            params,
        )
        fulltext = fulltext.fetchone()[0] if dry_run else fulltext.rowcount
    return {"embeddings": embeddings, "fulltext_vectors": fulltext, "older_than_days": older_than_days,
            "dry_run": dry_run}
