"""The embedding cache (``sitekb.embedding_cache``) and what embedding cost each run (``sitekb.embedding_spend``).

The cache is keyed by (model, dimensions, sha256 of the exact embedded text),
so a text is never embedded twice. Each request's vectors are written with
binary COPY and committed together with what the request cost
(:func:`store_vectors`): a task killed halfway resumes where it stopped and a
retried one pays only for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.rows import dict_row

from sitekb.store.connection import delete_or_count


@dataclass(frozen=True)
class Spend:
    """What one request cost, charged to a run."""

    run_id: str
    provider: str
    tokens: int
    usd: float


def distinct_texts(conn: psycopg.Connection, run_id: str) -> int:
    """How many distinct texts the run has to embed (cached or not)."""
    return conn.execute("SELECT count(DISTINCT text_hash) FROM sitekb.chunks WHERE run_id = %s",
                        (run_id,)).fetchone()[0]


def missing_texts(conn: psycopg.Connection, run_id: str, model: str, dimensions: int,
                  shard: tuple[int, int] | None = None) -> list[tuple[bytes, str, int]]:
    """(text_hash, embed_text, token_count) of the run's distinct texts the cache lacks, shortest first.

    Shortest first: consecutive texts then have similar lengths, so a local
    model's batches carry little padding. ``shard=(i, n)``: only the texts
    whose hash falls in part ``i`` of ``n`` (:func:`shard_condition`), so that
    ``n`` workers share a run's texts without overlap and without a list of them.
    """
    return conn.execute(
        f"""SELECT text_hash, embed_text, token_count FROM (
               SELECT DISTINCT ON (c.text_hash) c.text_hash, c.embed_text, c.token_count
               FROM sitekb.chunks c
               WHERE c.run_id = %s AND {shard_condition(shard)} AND NOT EXISTS (
                   SELECT 1 FROM sitekb.embedding_cache e
                   WHERE e.model = %s AND e.dimensions = %s AND e.text_hash = c.text_hash)
               ORDER BY c.text_hash) t
           ORDER BY token_count, text_hash""",
        (run_id, model, dimensions),
    ).fetchall()


def shard_condition(shard: tuple[int, int] | None) -> str:
    """SQL over ``c.text_hash`` that holds for the texts of part ``i`` of ``n`` (always true without a shard).

    The part is the text hash's first four bytes modulo ``n``: stable across
    processes and retries, and even because the hash is a SHA-256.
    """
    if shard is None:
        return "TRUE"
    index, count = (int(shard[0]), int(shard[1]))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index} of {count} does not exist")
    return f"mod(('x' || encode(substring(c.text_hash FROM 1 FOR 4), 'hex'))::bit(32)::bigint, {count}) = {index}"


def missing_totals(conn: psycopg.Connection, run_id: str, model: str, dimensions: int) -> tuple[int, int]:
    """(texts, tokens) of the run that the cache lacks."""
    texts, tokens = conn.execute(
        """SELECT count(*), coalesce(sum(token_count), 0) FROM (
               SELECT DISTINCT ON (c.text_hash) c.token_count FROM sitekb.chunks c
               WHERE c.run_id = %s AND NOT EXISTS (
                   SELECT 1 FROM sitekb.embedding_cache e
                   WHERE e.model = %s AND e.dimensions = %s AND e.text_hash = c.text_hash)) t""",
        (run_id, model, dimensions),
    ).fetchone()
    return int(texts), int(tokens)


def store_vectors(conn: psycopg.Connection, model: str, dimensions: int, hashes: Sequence[bytes],
                  vectors: np.ndarray, *, spend: Spend | None = None) -> None:
    """Write one batch to the cache with binary COPY (and its cost to the run's spend), then commit."""
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS embedding_batch "
            "(text_hash bytea, embedding vector) ON COMMIT DELETE ROWS"
        )
        with conn.cursor().copy("COPY embedding_batch (text_hash, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["bytea", "vector"])
            for digest, vector in zip(hashes, vectors):
                copy.write_row((digest, Vector(vector)))
        conn.execute(
            """INSERT INTO sitekb.embedding_cache (model, dimensions, text_hash, embedding)
               SELECT %s, %s, text_hash, embedding FROM embedding_batch
               ON CONFLICT DO NOTHING""",
            (model, dimensions),
        )
        if spend is not None:
            conn.execute(
                """INSERT INTO sitekb.embedding_spend AS s
                       (run_id, provider, model, dimensions, requests, inputs, tokens, usd)
                   VALUES (%s, %s, %s, %s, 1, %s, %s, %s)
                   ON CONFLICT (run_id, model, dimensions) DO UPDATE SET
                       requests = s.requests + 1, inputs = s.inputs + excluded.inputs,
                       tokens = s.tokens + excluded.tokens, usd = s.usd + excluded.usd, updated_at = now()""",
                (spend.run_id, spend.provider, model, dimensions, len(hashes), spend.tokens, spend.usd),
            )


def run_spend(conn: psycopg.Connection, run_id: str) -> dict:
    """What embedding has cost this run so far, over all its attempts."""
    requests, inputs, tokens, usd = conn.execute(
        """SELECT coalesce(sum(requests), 0), coalesce(sum(inputs), 0), coalesce(sum(tokens), 0),
                  coalesce(sum(usd), 0)::float8
           FROM sitekb.embedding_spend WHERE run_id = %s""",
        (run_id,),
    ).fetchone()
    return {"requests": int(requests), "inputs": int(inputs), "tokens": int(tokens), "usd": round(usd, 6)}


def spend_by_run(conn: psycopg.Connection, site: str | None, limit: int) -> list[dict]:
    """Requests, inputs, tokens and dollars of recent runs, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT s.run_id, r.site, s.provider, s.model, s.dimensions, s.requests, s.inputs, s.tokens,
                      s.usd::float8 AS usd, s.updated_at
               FROM sitekb.embedding_spend s LEFT JOIN sitekb.runs r USING (run_id)
               WHERE %(site)s::text IS NULL OR r.site = %(site)s
               ORDER BY s.updated_at DESC LIMIT %(limit)s""",
            {"site": site, "limit": limit},
        ).fetchall()


def cache_by_model(conn: psycopg.Connection) -> list[dict]:
    """Cached vectors per model and dimensions."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT model, dimensions, count(*) AS vectors, min(created_at) AS oldest, max(created_at) AS newest
               FROM sitekb.embedding_cache GROUP BY model, dimensions ORDER BY model, dimensions"""
        ).fetchall()


def prune(conn: psycopg.Connection, older_than_days: int, *, dry_run: bool = False) -> int:
    """Delete (or with ``dry_run`` count) cached vectors no staged chunk uses, older than the grace period."""
    return delete_or_count(conn, """sitekb.embedding_cache e
        WHERE e.created_at < now() - make_interval(days => %(days)s)
          AND NOT EXISTS (SELECT 1 FROM sitekb.chunks c WHERE c.text_hash = e.text_hash)""",
                           {"days": older_than_days}, dry_run=dry_run)
