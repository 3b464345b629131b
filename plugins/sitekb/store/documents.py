"""Extracted documents (``sitekb.documents``): one row per page and run, with the quality gate's verdict.

The extract stage writes a run's documents (:func:`replace_run`), the
validate stage gives each a verdict with every failed check and its measured
values (:func:`set_verdicts`), the chunk stage reads the accepted ones and may
still quarantine some (:func:`quarantine_after_chunking`; run again, it first
takes those back, :func:`undo_chunk_quarantine`). A quarantined
document stays, with its reasons, never silently dropped. Publishing drops the
documents of runs that retention no longer needs (:func:`drop_unneeded`).

Extracted text comes from pages anyone writes: characters Postgres text cannot
hold (NUL, lone surrogates) are removed as a document is written
(:func:`sitekb.untrusted.storable`), and how many is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence

import psycopg
from psycopg.rows import dict_row

from sitekb.store import chunks
from sitekb.untrusted import storable_value

log = logging.getLogger(__name__)

_COLUMNS = ("run_id", "site", "url", "content_hash", "title", "description", "author", "published", "modified",
            "language", "canonical_url", "tags", "markdown", "word_count", "visible_words", "extraction",
            "source_hash", "correction_id")

# The fetch each document was made from, copied from the page as the run left it (sitekb.pages
# keeps only a URL's latest fetch; a kept snapshot's documents keep theirs, for `sitekb explain`).
_FETCH_OF_RUN = """
    UPDATE sitekb.documents d SET fetched_at = p.fetched_at, etag = p.etag, last_modified = p.last_modified,
                                  page_hash = p.content_hash
    FROM sitekb.pages p
    WHERE d.run_id = %(run)s AND p.site = d.site AND p.url = d.url AND p.last_run_id = %(run)s
"""


def replace_run(conn: psycopg.Connection, run_id: str, site: str, documents: Iterable,
                corrected: Mapping[str, tuple[int, str]] | None = None, *, inputs: str | None = None) -> int:
    """Store the run's documents (``sitekb.extract.Document``), replacing any an earlier attempt wrote.

    ``corrected``: URL -> (correction id, hash of the extractor's own text) of the
    documents whose text is a content owner's correction. Each document also gets
    what the extractor cut and the fetch of its page (time, validators, body hash); ``inputs``
    (:func:`sitekb.extract.extraction_inputs`) is kept with what was cut, so a later run can reuse the
    document of an unchanged page.
    """
    corrected = corrected or {}
    count = removed = 0
    with conn.transaction():
        conn.execute("DELETE FROM sitekb.documents WHERE run_id = %s", (run_id,))
        with conn.cursor().copy(f"COPY sitekb.documents ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for doc in documents:
                correction_id, source_hash = corrected.get(doc.url, (None, None))
                row, unstorable = storable_value([
                    run_id, site, doc.url, doc.content_hash, doc.title, doc.description, doc.author, doc.published,
                    doc.modified, doc.language, doc.canonical_url, list(doc.tags), doc.markdown, doc.word_count,
                    doc.visible_words, json.dumps({**doc.extraction(), **({"inputs": inputs} if inputs else {})}),
                    source_hash, correction_id])
                copy.write_row(row)
                count += 1
                removed += unstorable
        # Statistics that know this run: every later stage's queries read its documents, and
        # with none the planner takes the run for one row and loops over it once per row of
        # another run's (a rebuild of 10,000 pages spent minutes in such plans). Only the
        # columns the queries filter and join on: a tenth of a second at 10,000 pages.
        conn.execute("ANALYZE sitekb.documents (run_id, site, url, status, content_hash, page_hash)")
        conn.execute(_FETCH_OF_RUN, {"run": run_id})
    if removed:
        log.warning("removed %d characters Postgres cannot store (NUL, lone surrogates) from the documents of %s",
                    removed, run_id)
    return count


def for_validation(conn: psycopg.Connection, run_id: str) -> list[dict]:
    """Every document of the run with what the document checks measure, shortest URL first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT url, title, markdown, word_count, language, content_hash, canonical_url, visible_words
               FROM sitekb.documents WHERE run_id = %s ORDER BY length(url), url""",
            (run_id,),
        ).fetchall()


def validated_before(conn: psycopg.Connection, run_id: str, inputs: str) -> dict[str, dict]:
    """The run's documents an earlier run already validated as they are, with that run's measures and failures.

    As they are: the same page body (``page_hash``) and text (``content_hash``), no correction,
    and the same validation inputs (``measures ->> 'validation_inputs'``: the quality config
    and sitekb's version, :func:`sitekb.quality.gate.validation_inputs`); the newest such
    document per URL (index ``documents_reuse``). Returns ``{url: {"measures", "failures",
    "dedup_signature"}}`` (the signature None when that run stored none).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT d.url, p.measures, p.failures, p.dedup_signature
               FROM sitekb.documents d
               CROSS JOIN LATERAL (
                   SELECT e.measures, e.failures, e.dedup_signature
                   FROM sitekb.documents e JOIN sitekb.runs r ON r.run_id = e.run_id
                   WHERE e.site = d.site AND e.url = d.url AND e.page_hash = d.page_hash AND e.run_id <> d.run_id
                     AND e.correction_id IS NULL AND e.content_hash = d.content_hash
                     AND e.status IN ('accepted', 'quarantined') AND e.measures ->> 'validation_inputs' = %s
                   ORDER BY r.started_at DESC LIMIT 1) p
               WHERE d.run_id = %s AND d.correction_id IS NULL AND d.page_hash IS NOT NULL""",
            (inputs, run_id)).fetchall()
    return {row["url"]: {"measures": row["measures"], "failures": row["failures"] or [],
                         "dedup_signature": row["dedup_signature"]} for row in rows}


def set_verdicts(conn: psycopg.Connection, run_id: str, verdicts: Sequence[tuple], default_language: str = "en",
                 *, signatures: Mapping[str, bytes] | None = None) -> None:
    """(url, status, failures, measures, approval_id) for documents of the run, in one transaction.

    ``signatures``: the near-duplicate check's signature of each document's text, by URL.

    Also sets the language each document is indexed and searched by
    (``sitekb.document_language`` of the declared and the measured language), or
    ``default_language`` (the site's first) when neither is known.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """UPDATE sitekb.documents SET status = %s, failures = %s, measures = %s, approval_id = %s,
                      index_language = coalesce(sitekb.document_language(language, %s::jsonb), %s),
                      dedup_signature = %s
               WHERE run_id = %s AND url = %s""",
            [(status, json.dumps(failures), json.dumps(measures, default=str), approval_id,
              json.dumps(measures, default=str), default_language, (signatures or {}).get(url), run_id, url)
             for url, status, failures, measures, approval_id in verdicts],
        )


def languages(conn: psycopg.Connection, run_id: str) -> dict[str, int]:
    """Accepted documents of the run per language they are indexed in (primary tag; '' unknown), most first."""
    rows = conn.execute(
        """SELECT coalesce(split_part(lower(index_language), '-', 1), ''), count(*) FROM sitekb.documents
           WHERE run_id = %s AND status = 'accepted' GROUP BY 1 ORDER BY 2 DESC, 1""", (run_id,)).fetchall()
    return dict(rows)


def accepted(conn: psycopg.Connection, run_id: str) -> list[dict]:
    """url, title and markdown of the run's accepted documents."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT url, title, markdown FROM sitekb.documents WHERE run_id = %s AND status = 'accepted'",
            (run_id,),
        ).fetchall()


# The checks of the chunk suite (sitekb.quality.suites.chunk_checks), which no approval covers.
CHUNK_CHECKS = ("chunks", "max_chunk_tokens")


def quarantine_after_chunking(conn: psycopg.Connection, run_id: str, failures: Mapping[str, list[dict]]) -> None:
    """Quarantine accepted documents that failed a chunk check, and drop their chunks.

    Approvals cover the document checks only (the model cannot take these chunks
    anyway): an approved document is quarantined too, and keeps its approval for
    when its chunks fit (a rerun of the chunk stage under a larger limit).
    """
    with conn.transaction(), conn.cursor() as cur:
        for url, failed in failures.items():
            cur.execute(
                """UPDATE sitekb.documents SET status = 'quarantined',
                          failures = failures || %s::jsonb WHERE run_id = %s AND url = %s""",
                (json.dumps(failed), run_id, url),
            )
        chunks.delete_of_run(cur, run_id, list(failures))


def undo_chunk_quarantine(conn: psycopg.Connection, run_id: str) -> int:
    """Take back what an earlier chunk stage of the run quarantined, before the stage runs again.

    Each such document loses its chunk-check failures and is accepted again when
    none of the document checks failed or an approval covers them. Returns how many.
    """
    with conn.transaction():
        cur = conn.execute(
            """UPDATE sitekb.documents d SET failures = kept.failures,
                      status = CASE WHEN jsonb_array_length(kept.failures) = 0 OR d.approval_id IS NOT NULL
                                    THEN 'accepted' ELSE 'quarantined' END
               FROM (SELECT url, coalesce(jsonb_agg(f) FILTER (WHERE NOT f->>'check' = ANY(%(checks)s)), '[]')
                                 AS failures
                     FROM sitekb.documents, jsonb_array_elements(failures) f
                     WHERE run_id = %(run)s AND status = 'quarantined'
                     GROUP BY url
                     HAVING bool_or(f->>'check' = ANY(%(checks)s))) kept
               WHERE d.run_id = %(run)s AND d.url = kept.url""",
            {"run": run_id, "checks": list(CHUNK_CHECKS)},
        )
        return cur.rowcount


def counts(conn: psycopg.Connection, run_id: str) -> dict:
    """Documents the run extracted and how many of them are quarantined."""
    extracted, quarantined = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'quarantined') FROM sitekb.documents WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    return {"extracted": extracted, "quarantined": quarantined}


def summary(conn: psycopg.Connection, run_id: str) -> dict:
    """Counts of a run's documents by status and failed check (after every stage that quarantines)."""
    with conn.cursor(row_factory=dict_row) as cur:
        totals = cur.execute(
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
    return {**totals, "failed_checks": {r["check"]: r["n"] for r in checks}}


# The documents of the newest run of each site that got through validation.
_NEWEST_VALIDATED = """
    SELECT d.* FROM sitekb.documents d
    JOIN (SELECT DISTINCT ON (site) site, run_id FROM sitekb.runs
          WHERE stages ? 'validate' ORDER BY site, started_at DESC, run_id DESC) latest USING (site, run_id)
"""


def held_back(conn: psycopg.Connection, site: str | None = None) -> list[dict]:
    """Quarantined and approved documents of the newest validated run of each site, with their approvals."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT d.site, d.url, d.title, d.status, d.failures, d.run_id, d.content_hash, d.word_count,
                       a.id AS approval_id, a.reason AS approval_reason, a.approved_by, a.approved_at
                FROM ({_NEWEST_VALIDATED}) d
                LEFT JOIN sitekb.quarantine_approvals a ON a.id = d.approval_id
                WHERE (d.status = 'quarantined' OR d.approval_id IS NOT NULL)
                  AND (%(site)s::text IS NULL OR d.site = %(site)s)
                ORDER BY d.site, d.status DESC, d.url""",
            {"site": site},
        ).fetchall()


def newest_validated(conn: psycopg.Connection, url: str, site: str | None = None) -> list[dict]:
    """The document at ``url`` in the newest validated run of each site (or of ``site``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT site, url, run_id, status, failures, content_hash, approval_id FROM ({_NEWEST_VALIDATED}) d
                WHERE url = %(url)s AND (%(site)s::text IS NULL OR site = %(site)s)""",
            {"url": url, "site": site},
        ).fetchall()


def erase_urls(cur: psycopg.Cursor, site: str, urls: Sequence[str]) -> None:
    """Delete every run's documents of these URLs (consent withdrawn; inside the caller's transaction)."""
    cur.execute("DELETE FROM sitekb.documents WHERE site = %s AND url = ANY(%s)", (site, list(urls)))


def drop_unneeded(conn: psycopg.Connection, site: str, run_id: str, keep: int) -> int:
    """Delete the documents of finished runs past the newest ``keep`` whose snapshot retention dropped.

    Each run stores the site's extracted text again. The documents (and
    quarantine verdicts) of the newest ``keep`` runs stay for inspection, and
    so do those of every run whose snapshot is kept (live, rollback target,
    pinned); older ones go, so the database does not grow by a copy of the site
    every run. Returns how many were deleted.
    """
    with conn.transaction():
        return conn.execute(
            """DELETE FROM sitekb.documents WHERE site = %s AND run_id IN (
                   SELECT run_id FROM sitekb.runs WHERE site = %s AND run_id <> %s
                     AND finished_at IS NOT NULL
                   ORDER BY started_at DESC, run_id DESC OFFSET %s)
                 AND run_id NOT IN (SELECT run_id FROM sitekb.snapshots
                                    WHERE site = %s AND table_name IS NOT NULL)""",
            (site, site, run_id, keep - 1, site),
        ).rowcount


def discard_run(conn: psycopg.Connection, run_id: str) -> None:
    """Delete a run's documents and staged chunks (a dry run keeps nothing but its record)."""
    with conn.transaction(), conn.cursor() as cur:
        chunks.delete_of_run(cur, run_id)
        cur.execute("DELETE FROM sitekb.documents WHERE run_id = %s", (run_id,))
