"""Staged chunks (``sitekb.chunks``): a run's chunks before they are embedded and built into a snapshot.

The chunk stage writes them with binary COPY (:func:`replace_run`); the chunk
suite reads per-document statistics (:func:`per_document`); the build reads
them with their cached vectors (:mod:`sitekb.store.snapshot_tables`).
Publishing deletes the staged chunks of older runs: a snapshot holds its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg.rows import dict_row

_COPY = """COPY sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                               text_hash, token_count) FROM STDIN WITH (FORMAT BINARY)"""
_TYPES = ["text", "text", "text", "text", "int4", "text[]", "text", "text", "bytea", "int4"]


def replace_run(conn: psycopg.Connection, run_id: str, site: str, rows: Iterable[tuple], *,
                copy_from: tuple[str, Sequence[str]] | None = None) -> None:
    """Store the run's chunks, replacing any an earlier attempt wrote.

    ``rows``: (chunk_id, url, seq, heading_path, text, embed_text, text_hash, token_count).
    ``copy_from``: (an earlier run, URLs) whose staged chunks are copied as they are, in the same transaction.
    """
    with conn.transaction():
        conn.execute("DELETE FROM sitekb.chunks WHERE run_id = %s", (run_id,))
        with conn.cursor().copy(_COPY) as copy:
            copy.set_types(_TYPES)
            for chunk_id, url, seq, heading_path, text, embed_text, digest, tokens in rows:
                copy.write_row((run_id, chunk_id, site, url, seq, list(heading_path), text, embed_text, digest,
                                tokens))
        if copy_from is not None and copy_from[1]:
            conn.execute(
                """INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                                              text_hash, token_count)
                   SELECT %s, chunk_id, site, url, seq, heading_path, text, embed_text, text_hash, token_count
                   FROM sitekb.chunks WHERE run_id = %s AND url = ANY(%s)""",
                (run_id, copy_from[0], list(copy_from[1])))
        # Statistics that know this run's chunks, for the chunk suite and the build that read them
        # (the documents' get theirs in the extract stage: sitekb.store.documents.replace_run).
        conn.execute("ANALYZE sitekb.chunks (run_id, url, chunk_id, text_hash)")


def reusable(conn: psycopg.Connection, site: str, run_id: str, inputs: str) -> tuple[str | None, list[str]]:
    """The site's newest other run whose staged chunks were cut with ``inputs`` (the stage record's
    ``chunk_inputs``), and the URLs of this run's accepted documents it chunked from the same title and text.
    """
    row = conn.execute(
        """SELECT r.run_id FROM sitekb.runs r
           WHERE r.site = %s AND r.run_id <> %s AND r.stages -> 'chunk' ->> 'chunk_inputs' = %s
             AND EXISTS (SELECT 1 FROM sitekb.chunks c WHERE c.run_id = r.run_id)
           ORDER BY r.started_at DESC LIMIT 1""",
        (site, run_id, inputs)).fetchone()
    if row is None:
        return None, []
    # Every accepted document of the run is compared: hash joins. The planner takes the join of
    # two runs' documents on url and content hash for one row and would loop over the source's
    # chunks once per document (9.6 s at 3,000 pages, growing with their square).
    with conn.transaction():
        conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
        urls = conn.execute(
            """SELECT d.url FROM sitekb.documents d
               JOIN sitekb.documents p ON p.run_id = %(source)s AND p.url = d.url
                                      AND p.content_hash = d.content_hash AND p.title IS NOT DISTINCT FROM d.title
               WHERE d.run_id = %(run)s AND d.status = 'accepted'
                 AND d.url IN (SELECT url FROM sitekb.chunks WHERE run_id = %(source)s)
               ORDER BY d.url""",
            {"source": row[0], "run": run_id}).fetchall()
    return row[0], [url for (url,) in urls]


def per_document(conn: psycopg.Connection, run_id: str) -> list[dict]:
    """For every accepted document of the run: its chunk count and largest chunk in tokens."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            # The chunks are counted per page first, then joined: the stage has just written
            # them, so they have no statistics, and a join of every document to the run's chunks
            # was planned as a scan of those chunks per document (4.5 s for 450 pages).
            """SELECT d.url, coalesce(c.chunks, 0) AS chunks, c.max_chunk_tokens
               FROM sitekb.documents d
               LEFT JOIN (SELECT url, count(*) AS chunks, max(token_count) AS max_chunk_tokens
                          FROM sitekb.chunks WHERE run_id = %(run)s GROUP BY url) c ON c.url = d.url
               WHERE d.run_id = %(run)s AND d.status = 'accepted' ORDER BY d.url""",
            {"run": run_id},
        ).fetchall()


def totals(conn: psycopg.Connection, run_id: str) -> tuple[int, int]:
    """(chunks, tokens) staged for the run."""
    chunks, tokens = conn.execute(
        "SELECT count(*), coalesce(sum(token_count), 0) FROM sitekb.chunks WHERE run_id = %s", (run_id,)
    ).fetchone()
    return chunks, int(tokens)


def delete_of_run(cur: psycopg.Cursor, run_id: str, urls: Sequence[str] | None = None) -> None:
    """Delete the run's chunks (of these URLs only, if given), inside the caller's transaction."""
    if urls is None:
        cur.execute("DELETE FROM sitekb.chunks WHERE run_id = %s", (run_id,))
    elif urls:
        cur.execute("DELETE FROM sitekb.chunks WHERE run_id = %s AND url = ANY(%s)", (run_id, list(urls)))


def erase_urls(cur: psycopg.Cursor, site: str, urls: Sequence[str]) -> None:
    """Delete every run's chunks of these URLs (consent withdrawn; inside the caller's transaction)."""
    cur.execute("DELETE FROM sitekb.chunks WHERE site = %s AND url = ANY(%s)", (site, list(urls)))


def drop_older_runs(conn: psycopg.Connection, site: str, run_id: str) -> None:
    """Delete the staged chunks of the site's finished runs other than ``run_id`` (a snapshot holds them)."""
    with conn.transaction():
        conn.execute(
            """DELETE FROM sitekb.chunks WHERE site = %s AND run_id IN (
                   SELECT run_id FROM sitekb.runs WHERE site = %s AND run_id <> %s AND finished_at IS NOT NULL)""",
            (site, site, run_id),
        )
