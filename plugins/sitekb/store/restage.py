"""The SQL of a rebuild's staging (:mod:`sitekb.restage`): a crawl's pages taken up by a new run without a request.

A rebuild run takes over the page rows its source run (the site's newest
crawl) left: :func:`stage` moves them to the new run (``last_run_id``), as a
crawl that found every page unchanged would, marks or erases the ones the
current config leaves out, and copies the source's ledgers (exclusions, fetch
failures) to the new run, so the ledgers and the quality gate read the new run
as they read a crawl. Everything happens in one transaction and can run twice:
a retried staging finds its rows under its own run id.

A page a URL or content-type rule of the current config leaves out keeps its
stored fetch (marked with its rule, like a crawl's untouched row keeps it), so a
later rebuild can let it in again; an opt-out erases it everywhere but in
snapshots, as the crawler does (:func:`sitekb.store.pages.write_crawl_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg

from sitekb.store import chunks, documents, ledger

# The rows a rebuild takes up: its source's, those of a crawl that stopped part way after it (their
# fetch is newer), and its own (a retried staging).
_ROWS = """
    p.site = %(site)s AND (p.last_run_id = %(source)s OR p.last_run_id = %(run)s OR p.last_run_id IN (
        SELECT r.run_id FROM sitekb.runs r
        WHERE r.site = %(site)s AND r.started_at > (SELECT started_at FROM sitekb.runs WHERE run_id = %(source)s)))
"""


def source_run(conn: psycopg.Connection, site: str) -> str | None:
    """The site's newest run whose crawl stage finished (a crawl, a dry run's crawl, or a rebuild's staging)."""
    row = conn.execute(
        """SELECT run_id FROM sitekb.runs WHERE site = %s AND stages ? 'crawl'
           ORDER BY started_at DESC, run_id DESC LIMIT 1""",
        (site,),
    ).fetchone()
    return row[0] if row else None


def running_run(conn: psycopg.Connection, site: str) -> str | None:
    """A run of the site still marked running, if any (for the words of a refusal)."""
    row = conn.execute("SELECT run_id FROM sitekb.runs WHERE site = %s AND status = 'running' LIMIT 1",
                       (site,)).fetchone()
    return row[0] if row else None


def crawl_record(conn: psycopg.Connection, run_id: str) -> dict:
    """What the run's crawl stage recorded (empty when nothing)."""
    row = conn.execute("SELECT stages -> 'crawl' FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()
    return (row[0] if row else None) or {}


@dataclass(frozen=True)
class Staged:
    """A stored page a rebuild may take up (``body`` None: an error status, or excluded and erased by a crawl)."""

    url: str
    status: int
    content_type: str | None
    body: str | None
    headers: dict
    excluded_rule: str | None


def candidates(conn: psycopg.Connection, site: str, source: str, run_id: str) -> Iterator[Staged]:
    """The rows a rebuild of ``source`` takes up, with their bodies, streamed by URL."""
    # A named (server-side) cursor streams the bodies; it needs a transaction.
    with conn.transaction(), conn.cursor(name="pages_to_restage") as cur:
        cur.execute(f"SELECT p.url, p.status, p.content_type, p.body, p.headers, p.excluded_rule "
                    f"FROM sitekb.pages p WHERE {_ROWS} ORDER BY p.url",
                    {"site": site, "source": source, "run": run_id})
        for url, status, content_type, body, headers, excluded_rule in cur:
            yield Staged(url, status, content_type, body, headers or {}, excluded_rule)


def stage(conn: psycopg.Connection, site: str, source: str, run_id: str, *, kept: Sequence[str],
          left_out: Sequence[ledger.Exclusion] = (), withdrawn: Sequence[ledger.Exclusion] = (),
          let_in: Sequence[str] = (), retractable: Sequence[str] = ()) -> None:
    """Move the source's rows to ``run_id`` and apply the verdicts, in one transaction (safe to run twice).

    ``kept``: the pages staged; the source's ledger rows that left one of them out by a ``retractable``
    rule (an earlier rebuild's) are not carried over.
    ``left_out``: pages a config rule now leaves out (their fetch stays, marked with the rule);
    ``withdrawn``: pages an opt-out now leaves out (their content is erased, as a crawl erases it);
    ``let_in``: pages an earlier rebuild left out by a rule that no longer applies.
    """
    params = {"site": site, "source": source, "run": run_id}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"UPDATE sitekb.pages p SET last_run_id = %(run)s WHERE {_ROWS}", params)
        if left_out:
            cur.executemany("UPDATE sitekb.pages SET excluded_rule = %(rule)s WHERE site = %(site)s AND url = %(url)s",
                            [{"site": site, "url": e.url, "rule": e.rule} for e in left_out])
        if let_in:
            cur.execute("UPDATE sitekb.pages SET excluded_rule = NULL WHERE site = %s AND url = ANY(%s)",
                        (site, list(let_in)))
        # The crawl's ledgers, as the source recorded them; not the rule a page let in again was left out by.
        cur.execute(
            """INSERT INTO sitekb.exclusions (site, url, rule, detail, run_id)
               SELECT site, url, rule, detail, %(run)s FROM sitekb.exclusions
               WHERE site = %(site)s AND run_id = %(source)s
                 AND NOT (url = ANY(%(kept)s) AND rule = ANY(%(retractable)s))
               ORDER BY id
               ON CONFLICT (run_id, url, rule) DO NOTHING""",
            {**params, "kept": list(kept), "retractable": list(retractable)},
        )
        cur.execute(
            """INSERT INTO sitekb.fetch_failures (site, url, kind, detail, run_id)
               SELECT site, url, kind, detail, %(run)s FROM sitekb.fetch_failures
               WHERE site = %(site)s AND run_id = %(source)s
               ON CONFLICT (run_id, url) DO NOTHING""",
            params,
        )
        ledger.add_exclusions(cur, site, run_id, [*left_out, *withdrawn])
        if withdrawn:
            cur.executemany(
                """UPDATE sitekb.pages SET body = NULL, content_hash = NULL, etag = NULL, last_modified = NULL,
                                           links = '{}', excluded_rule = %(rule)s
                   WHERE site = %(site)s AND url = %(url)s""",
                [{"site": site, "url": e.url, "rule": e.rule} for e in withdrawn],
            )
            urls = [e.url for e in withdrawn]
            documents.erase_urls(cur, site, urls)
            chunks.erase_urls(cur, site, urls)


def excluded_by_rule(conn: psycopg.Connection, run_id: str) -> dict[str, int]:
    """How many URLs the run's ledger leaves out, per rule."""
    return dict(conn.execute("SELECT rule, count(*) FROM sitekb.exclusions WHERE run_id = %s GROUP BY rule "
                             "ORDER BY rule", (run_id,)).fetchall())


def carried_failures(conn: psycopg.Connection, run_id: str) -> int:
    """The fetch failures the run's ledger holds."""
    return conn.execute("SELECT count(*) FROM sitekb.fetch_failures WHERE run_id = %s", (run_id,)).fetchone()[0]
