"""Full-text vectors of a run's chunks, computed once per distinct content.

Keyword and hybrid search rank chunks by a weighted tsvector (title A,
heading path B, text C; ``sitekb.fulltext_vector``, sql/repeatable/), parsed
with the text-search configuration of the document's language
(``sitekb.text_config`` of ``documents.index_language``, which the quality
checks set: Spanish pages are stemmed as Spanish).
Computing one parses and stems every word, several times the cost of copying
the chunk, so the vectors live in ``sitekb.fulltext_cache`` keyed by what
they are made of (``sitekb.fulltext_key``), like embeddings: the chunk stage
computes the ones a run has not seen before, and a snapshot build copies them.
:func:`prune` drops entries no staged chunk uses (``sitekb embeddings prune``).
"""

from __future__ import annotations

import time

import psycopg

from sitekb.store.connection import delete_or_count

_RUN_CHUNKS = """
    FROM sitekb.chunks c
    JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
    WHERE c.run_id = %(run_id)s AND d.status = 'accepted'"""


def index_run(conn: psycopg.Connection, run_id: str) -> dict:
    """Compute and cache the full-text vectors of the run's accepted chunks that are not cached yet.

    Idempotent and safe to run concurrently: a vector another run cached
    meanwhile is kept. Returns how many were computed and reused.
    """
    started = time.monotonic()
    with conn.transaction():
        # CREATE TABLE AS lets parallel workers compute the vectors (INSERT ... SELECT
        # never runs in parallel); every row of the run is read, so hash joins.
        conn.execute("SELECT set_config('parallel_setup_cost', '0', true), "
                     "set_config('parallel_tuple_cost', '0', true), set_config('enable_nestloop', 'off', true)")
        conn.execute("DROP TABLE IF EXISTS pg_temp.fulltext_new")
        conn.execute(
            f"""CREATE TEMP TABLE fulltext_new ON COMMIT DROP AS
                SELECT k.key, sitekb.fulltext_vector(k.config, d.title, c.heading_path, c.text) AS tsv
                FROM sitekb.chunks c
                JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
                CROSS JOIN LATERAL (SELECT sitekb.text_config(d.index_language) AS config) l
                CROSS JOIN LATERAL (SELECT l.config,
                                           sitekb.fulltext_key(l.config, d.title, c.heading_path, c.text) AS key) k
                WHERE c.run_id = %(run_id)s AND d.status = 'accepted'
                  AND NOT EXISTS (SELECT 1 FROM sitekb.fulltext_cache f WHERE f.key = k.key)""",
            {"run_id": run_id},
        )
        computed = conn.execute(
            "INSERT INTO sitekb.fulltext_cache (key, tsv) SELECT key, tsv FROM fulltext_new ON CONFLICT DO NOTHING"
        ).rowcount
        total = conn.execute(f"SELECT count(*) {_RUN_CHUNKS}", {"run_id": run_id}).fetchone()[0]
    return {"fulltext_computed": computed, "fulltext_reused": total - computed,
            "fulltext_seconds": round(time.monotonic() - started, 3)}


def prune(conn: psycopg.Connection, older_than_days: int, *, dry_run: bool = False) -> int:
    """Delete (or with ``dry_run`` count) cached vectors no staged chunk uses, older than the grace period."""
    return delete_or_count(conn, """sitekb.fulltext_cache f
        WHERE f.created_at < now() - make_interval(days => %(days)s)
          AND NOT EXISTS (
              SELECT 1 FROM sitekb.chunks c
              JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
              WHERE sitekb.fulltext_key(sitekb.text_config(d.index_language), d.title, c.heading_path, c.text) = f.key)""",
                           {"days": older_than_days}, dry_run=dry_run)
