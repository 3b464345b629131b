"""Messaging findings of snapshots (``sitekb.messaging_findings``), and what the scan reads.

The evaluate stage's gate (:func:`sitekb.quality.gate.judge_messaging`) reads
the run's accepted documents (:func:`snapshot_pages`), the chunks of the
snapshot as frontends will see them (:func:`snapshot_chunks`, from its table)
and the documents a messaging rule quarantined (:func:`held_back`), has
:func:`sitekb.messaging.scan` match them, and keeps one row per rule with
:func:`replace` (delete and insert in one transaction: a rerun of the stage
leaves the same rows). :func:`for_snapshot` reads them back for
`sitekb messaging` and the run summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sitekb.messaging import CHECK, Finding
from sitekb.store import snapshot_tables


def snapshot_pages(conn: psycopg.Connection, run_id: str) -> Iterator[dict]:
    """url, title and markdown of the run's accepted documents: the pages of its snapshot, streamed."""
    # A named (server-side) cursor holds one page's text at a time; it needs a transaction.
    with conn.transaction(), conn.cursor(name="messaging_pages", row_factory=dict_row) as cur:
        cur.execute(
            """SELECT url, title, markdown FROM sitekb.documents
               WHERE run_id = %s AND status = 'accepted' ORDER BY url""", (run_id,))
        yield from cur


def snapshot_chunks(conn: psycopg.Connection, table_name: str, urls: Sequence[str]) -> list[dict]:
    """chunk_id, url, heading_path and content of the snapshot's chunks of ``urls`` (pages a rule matched)."""
    if not urls:
        return []
    query = sql.SQL("SELECT chunk_id, url, heading_path, content FROM {} WHERE url = ANY(%s)").format(
        snapshot_tables.qualified(table_name))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (list(urls),)).fetchall()


def held_back(conn: psycopg.Connection, run_id: str) -> list[dict]:
    """Documents of the run a messaging rule quarantined, with the keys of those rules (``rules``).

    An approved document held back later by a chunk check is not held back for its wording.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT d.url, d.title, d.markdown,
                      array_agg(f ->> 'value' ORDER BY f ->> 'value') AS rules
               FROM sitekb.documents d CROSS JOIN LATERAL jsonb_array_elements(d.failures) f
               WHERE d.run_id = %s AND d.status = 'quarantined' AND d.approval_id IS NULL
                 AND f ->> 'check' = %s
               GROUP BY d.url, d.title, d.markdown ORDER BY d.url""", (run_id, CHECK)).fetchall()


def replace(conn: psycopg.Connection, snapshot_id: int, findings: Sequence[Finding]) -> None:
    """The snapshot's findings, one row per rule, in place of any it had."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM sitekb.messaging_findings WHERE snapshot_id = %s", (snapshot_id,))
        cur.executemany(
            """INSERT INTO sitekb.messaging_findings (snapshot_id, position, rule, kind, match, policy,
                                                       replacement, note, reason, pages, chunk_ids, held_back)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(snapshot_id, position, f.rule, f.kind, f.match, f.policy, f.replacement, f.note, f.reason,
              json.dumps([p.as_dict() for p in f.pages]), f.chunk_ids,
              json.dumps([p.as_dict() for p in f.held_back])) for position, f in enumerate(findings)])


def for_snapshot(conn: psycopg.Connection, snapshot_id: int) -> list[dict]:
    """The snapshot's findings in the order of its site config's rules (empty: it had no rules)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT rule, kind, match, policy, replacement, note, reason, pages, chunk_ids, held_back, scanned_at
               FROM sitekb.messaging_findings WHERE snapshot_id = %s ORDER BY position""",
            (snapshot_id,)).fetchall()
    for row in rows:
        row["chunks"] = len(row["chunk_ids"])
    return rows


def summary(conn: psycopg.Connection, snapshot_id: int | None) -> list[dict]:
    """Per rule, what a run summary and the snapshot's quality record show: pages and chunks still using it
    (counts, URLs, chunk ids), pages held back."""
    if snapshot_id is None:
        return []
    return [{"rule": r["rule"], "policy": r["policy"], "reason": r["reason"], "pages": len(r["pages"]),
             "chunks": r["chunks"], "held_back": len(r["held_back"]), "urls": [p["url"] for p in r["pages"]],
             "chunk_ids": list(r["chunk_ids"]), "held_back_urls": [p["url"] for p in r["held_back"]]}
            for r in for_snapshot(conn, snapshot_id)]
