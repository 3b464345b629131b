"""The quality gate of one run, over the database: documents, chunks, batch.

- :func:`validate_documents` (validate stage): measures every extracted
  document (:mod:`sitekb.quality`), flags exact and near duplicates across the
  crawl (:mod:`sitekb.dedup`), validates the measures with the
  ``sitekb.documents`` suite and marks each document accepted or quarantined
  with every failed check and its measured value. A failing document with an
  approval for its exact content hash is accepted (:mod:`sitekb.quarantine`).
- :func:`check_chunks` (end of the chunk stage): the ``sitekb.chunks`` suite;
  a document with nothing to embed or a chunk over the model's token limit is
  quarantined and its chunks dropped.
- :func:`judge_batch` (evaluate stage): the ``sitekb.batch`` suite over the
  run's totals against the live snapshot.

All three write Data Docs to :func:`data_docs_dir` when the site config's
``quality.data_docs`` is on. Settings read: ``SITEKB_HOME`` (via Settings).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from sitekb import dedup, quality, quarantine
from sitekb.expectations import suites
from sitekb.expectations.runner import Outcome, validate_rows
from sitekb.settings import Settings
from sitekb.sites import QualityConfig, SiteConfig


def data_docs_dir(site: SiteConfig, run_id: str, settings: Settings | None = None) -> Path | None:
    """$SITEKB_HOME/data_docs/<site>/<run_id>/ (None when the site turned Data Docs off)."""
    if not site.quality.data_docs:
        return None
    home = (settings or Settings.from_env()).home
    return home / "data_docs" / site.name / re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def document_rows(docs: list[Mapping], config: QualityConfig) -> list[dict]:
    """The measured rows of the document suite, duplicate flags included."""
    rows = [quality.measure_document(doc) for doc in docs]
    # Which copy of a duplicate cluster is kept depends on which copies are otherwise healthy.
    others = [c for c in suites.document_checks(config) if c.name not in ("duplicate", "near_duplicate")]
    duplicates = dedup.find_duplicates(
        [dedup.Text(d["url"], d.get("markdown") or "", d.get("canonical_url"),
                    healthy=not any(c.judge(row) for c in others)) for d, row in zip(docs, rows)],
        config.near_duplicate_threshold,
    )
    for row in rows:
        dup = duplicates.get(row["url"])
        row["duplicate_of"] = dup.of if dup and dup.exact else None
        row["near_duplicate_of"] = dup.of if dup and not dup.exact else None
        row["similarity"] = dup.similarity if dup else None
    return rows


def validate_documents(conn: psycopg.Connection, run_id: str, site: SiteConfig,
                       docs_dir: Path | None = None) -> dict:
    """Accept or quarantine every document of the run; return counts for the run record."""
    with conn.cursor(row_factory=dict_row) as cur:
        docs = cur.execute(
            """SELECT url, title, markdown, word_count, language, content_hash, canonical_url, visible_words
               FROM sitekb.documents WHERE run_id = %s ORDER BY length(url), url""",
            (run_id,),
        ).fetchall()
    rows = document_rows(docs, site.quality)
    outcome = validate_rows(suites.DOCUMENTS, suites.document_checks(site.quality), rows,
                            data_docs_dir=docs_dir, run_name=run_id)
    approvals = quarantine.approvals_for(conn, site.name)
    updates, quarantined, approved = [], {}, {}
    by_check: Counter[str] = Counter()
    for doc, row in zip(docs, rows):
        failures = outcome.failures.get(doc["url"], [])
        approval = approvals.get((doc["url"], doc["content_hash"])) if failures else None
        status = "quarantined" if failures and approval is None else "accepted"
        if status == "quarantined":
            quarantined[doc["url"]] = [f.check for f in failures]
            by_check.update(f.check for f in failures)
        elif approval is not None:
            approved[doc["url"]] = approval["reason"]
        updates.append((status, json.dumps([f.as_dict() for f in failures]), json.dumps(row, default=str),
                        approval["id"] if approval else None, run_id, doc["url"]))
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """UPDATE sitekb.documents SET status = %s, failures = %s, measures = %s, approval_id = %s
               WHERE run_id = %s AND url = %s""",
            updates,
        )
    return {"documents": len(docs), "accepted": len(docs) - len(quarantined), "quarantined": len(quarantined),
            "approved": len(approved), "quarantined_urls": quarantined, "approved_urls": approved,
            "failed_checks": dict(sorted(by_check.items())), "engine": outcome.engine,
            "data_docs": outcome.data_docs, "suite_seconds": round(outcome.seconds, 3)}


def check_chunks(conn: psycopg.Connection, run_id: str, site: SiteConfig, max_tokens: int,
                 docs_dir: Path | None = None) -> dict:
    """Quarantine accepted documents with no chunk or a chunk over ``max_tokens``; drop their chunks."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT d.url, count(c.chunk_id) AS chunks, max(c.token_count) AS max_chunk_tokens
               FROM sitekb.documents d
               LEFT JOIN sitekb.chunks c ON c.run_id = d.run_id AND c.url = d.url
               WHERE d.run_id = %s AND d.status = 'accepted' GROUP BY d.url ORDER BY d.url""",
            (run_id,),
        ).fetchall()
    outcome = validate_rows(suites.CHUNKS, suites.chunk_checks(max_tokens), rows,
                            data_docs_dir=docs_dir, run_name=run_id)
    if outcome.failures:
        with conn.transaction(), conn.cursor() as cur:
            for url, failures in outcome.failures.items():
                # Approvals cover the document checks only: the model cannot take these chunks anyway.
                cur.execute(
                    """UPDATE sitekb.documents SET status = 'quarantined', approval_id = NULL,
                              failures = failures || %s::jsonb WHERE run_id = %s AND url = %s""",
                    (json.dumps([f.as_dict() for f in failures]), run_id, url),
                )
                cur.execute("DELETE FROM sitekb.chunks WHERE run_id = %s AND url = %s", (run_id, url))
    return {"quarantined_after_chunking": {url: [f.check for f in fs] for url, fs in outcome.failures.items()},
            "chunk_suite_engine": outcome.engine}


def judge_batch(totals: Mapping, live_counts: Mapping | None, site: SiteConfig, run_id: str,
                docs_dir: Path | None = None) -> tuple[list[quality.Failure], dict]:
    """Failures of the batch suite and the measured row, for the snapshot's quality summary."""
    row = quality.measure_batch(totals, live_counts)
    outcome: Outcome = validate_rows(suites.BATCH, suites.batch_checks(site.quality), [row], id_column="run",
                                     data_docs_dir=docs_dir, run_name=run_id)
    return outcome.failures.get("batch", []), {"measures": row, **outcome.summary()}


def document_summary(conn: psycopg.Connection, run_id: str) -> dict:
    """Counts of a run's documents by status and failed check (after every stage that quarantines)."""
    with conn.cursor(row_factory=dict_row) as cur:
        counts = cur.execute(
            """SELECT count(*) AS extracted,
                      count(*) FILTER (WHERE status = 'accepted') AS accepted,
                      count(*) FILTER (WHERE status = 'quarantined') AS quarantined,
                      count(*) FILTER (WHERE approval_id IS NOT NULL AND status = 'accepted') AS approved
               FROM sitekb.documents WHERE run_id = %s""",
            (run_id,),
        ).fetchone()
        checks = cur.execute(
            """SELECT f->>'check' AS check, count(*) AS n FROM sitekb.documents d,
                      jsonb_array_elements(d.failures) f
               WHERE d.run_id = %s AND d.status = 'quarantined' GROUP BY 1 ORDER BY 1""",
            (run_id,),
        ).fetchall()
    return {**counts, "failed_checks": {r["check"]: r["n"] for r in checks}}
