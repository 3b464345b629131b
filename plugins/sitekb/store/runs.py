"""Runs (``sitekb.runs``): one row per refresh, with its effective config, its embedder and each stage's record.

A run is started once per run id (a retried start task changes nothing), and
it records the site config as resolved when it started, the embedder chosen
then (provider, model, dimensions, tokenizer, server, key variable), and,
stage by stage, what each stage did (``stages``: counts, decisions, seconds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from sitekb.errors import NotFound, RunInProgress, SitekbError
from sitekb.redaction import redact
from sitekb.sites import SiteConfig
from sitekb.store import history, locks

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A run as every stage sees it."""

    run_id: str
    site: SiteConfig
    params: dict = field(default_factory=dict)
    embedding: dict = field(default_factory=dict)   # sitekb.embedding.EmbedderChoice as recorded
    status: str = "running"


def start(conn: psycopg.Connection, site: SiteConfig, run_id: str, params: dict, embedding: dict, *,
          gone: Callable[[dict], str | None] | None = None) -> tuple[Run, list[str]]:
    """Record the run (or take up again one that has not succeeded) with its config and embedder.

    One run of a site at a time: under a lock per site, any other run still
    marked running either is gone (``gone(params)`` says why: its process
    died) and is marked failed here, or stops this start with
    :class:`RunInProgress`. Returns the run and the ids of the runs it took
    over (their staged rows are the caller's to clean up).

    A run that succeeded is finished: its snapshot may be live, and starting it
    again would mark it running. That is refused.
    """
    taken_over: list[str] = []
    with conn.transaction():
        locks.hold(conn, f"starting a run of site {site.name!r}", "sitekb.runs", site.name)
        for other, other_params, started_at in conn.execute(
                """SELECT run_id, params, started_at FROM sitekb.runs
                   WHERE site = %s AND status = 'running' AND run_id <> %s ORDER BY started_at""",
                (site.name, run_id)).fetchall():
            why = gone(other_params or {}) if gone is not None else None
            if why is None:
                raise RunInProgress(
                    f"site {site.name!r} is being refreshed by run {other} (started {started_at:%Y-%m-%d %H:%M} UTC, "
                    f"{holder_text(other_params or {})}); two runs of a site at once would corrupt each other. "
                    f"Wait for it to finish; if its process is gone for good, `sitekb run {site.name} --take-over` "
                    "marks it failed and starts a new run"
                )
            conn.execute(
                """UPDATE sitekb.runs SET status = 'failed', finished_at = now(), error = %s
                   WHERE run_id = %s AND status = 'running'""",
                (f"{why}; taken over by run {run_id}", other),
            )
            taken_over.append(other)
        trimmed = history.trim(conn, site.name, site.history_runs)
        if any(trimmed.values()):
            log.info("site %s: history of old runs trimmed (%s)", site.name,
                     ", ".join(f"{n} {table}" for table, n in trimmed.items() if n))
        row = conn.execute(
            """INSERT INTO sitekb.runs (run_id, site, params, config, config_hash, embedding)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (run_id) DO UPDATE SET status = 'running', error = NULL, finished_at = NULL,
                   params = EXCLUDED.params, config = EXCLUDED.config, config_hash = EXCLUDED.config_hash,
                   embedding = EXCLUDED.embedding
               WHERE sitekb.runs.status <> 'succeeded' AND sitekb.runs.site = EXCLUDED.site
               RETURNING run_id""",
            (run_id, site.name, json.dumps(params), site.model_dump_json(), site.config_hash(),
             json.dumps(embedding)),
        ).fetchone()
    if row is None:
        existing = load(conn, run_id)
        if existing.site.name != site.name:
            raise SitekbError(f"run {run_id!r} belongs to site {existing.site.name!r}, not {site.name!r}")
        raise SitekbError(f"run {run_id!r} of {site.name!r} already succeeded; start a new run to refresh again")
    return Run(run_id, site, params, embedding), taken_over


def holder_text(params: dict) -> str:
    """Who runs a run, for people: the Airflow DAG run, or the process and host."""
    holder = params.get("holder") or {}
    if holder.get("pid"):
        return f"process {holder['pid']} on {holder.get('host', '?')}"
    if holder.get("airflow"):
        return f"Airflow DAG run {holder['airflow']}"
    actor = str(params.get("actor") or "")
    if actor.startswith("airflow:"):
        return f"Airflow DAG run {actor.removeprefix('airflow:')}"
    return f"by {actor or 'an unknown process'}"


def load(conn: psycopg.Connection, run_id: str) -> Run:
    row = conn.execute("SELECT config, params, embedding, status FROM sitekb.runs WHERE run_id = %s",
                       (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"run {run_id!r} is unknown; a run is recorded by its start (`sitekb run SITE`)")
    return Run(run_id, SiteConfig.model_validate(row[0]), row[1], row[2], row[3])


def find(conn: psycopg.Connection, run_id: str) -> Run | None:
    """The run, or None when it was never recorded."""
    try:
        return load(conn, run_id)
    except NotFound:
        return None


def worth_keeping(conn: psycopg.Connection, site: str, keep: int) -> set[str]:
    """The site's newest ``keep`` runs and every run whose snapshot still has its table."""
    rows = conn.execute(
        """(SELECT run_id FROM sitekb.runs WHERE site = %s ORDER BY started_at DESC, run_id DESC LIMIT %s)
           UNION
           SELECT run_id FROM sitekb.snapshots WHERE site = %s AND table_name IS NOT NULL""",
        (site, keep, site),
    ).fetchall()
    return {row[0] for row in rows}


def newest(conn: psycopg.Connection, site: str) -> str:
    """The id of the site's most recent run."""
    row = conn.execute("SELECT run_id FROM sitekb.runs WHERE site = %s ORDER BY started_at DESC, run_id DESC LIMIT 1",
                       (site,)).fetchone()
    if row is None:
        raise NotFound(f"site {site!r} has no run yet; `sitekb run {site}` starts one")
    return row[0]


def started_since(conn: psycopg.Connection, site: str, since: datetime) -> str | None:
    """The newest run of ``site`` started after ``since`` (the run an Airflow DAG run made)."""
    row = conn.execute(
        "SELECT run_id FROM sitekb.runs WHERE site = %s AND started_at > %s ORDER BY started_at DESC LIMIT 1",
        (site, since),
    ).fetchone()
    return row[0] if row else None


def database_now(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT statement_timestamp()").fetchone()[0]


def record_stage(conn: psycopg.Connection, run_id: str, name: str, record: dict) -> None:
    """Store what a stage did under ``stages[name]`` (a re-run stage replaces its record)."""
    with conn.transaction():
        conn.execute(
            "UPDATE sitekb.runs SET stages = stages || jsonb_build_object(%s::text, %s::jsonb) WHERE run_id = %s",
            (name, json.dumps(record, default=str), run_id),
        )


def finish(conn: psycopg.Connection, run_id: str, status: str, error: str | None = None) -> None:
    """End a run as succeeded or blocked (a failed gate)."""
    with conn.transaction():
        conn.execute("UPDATE sitekb.runs SET status = %s, error = %s, finished_at = now() WHERE run_id = %s",
                     (status, redact(error) if error else error, run_id))


def fail(conn: psycopg.Connection, run_id: str, error: BaseException | str) -> None:
    """Mark a running run failed (a run the gate blocked stays blocked)."""
    with conn.transaction():
        conn.execute(
            """UPDATE sitekb.runs SET status = 'failed', error = %s, finished_at = now()
               WHERE run_id = %s AND status = 'running'""",
            (redact(str(error))[:4000], run_id),
        )


def summary(conn: psycopg.Connection, run_id: str) -> tuple[dict, dict | None]:
    """The run's row and its snapshot's row (with the aliases pointing at it), for the run summary."""
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute("SELECT * FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        snap = cur.execute(
            """SELECT s.*, coalesce(array_agg(a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases
               FROM sitekb.snapshots s LEFT JOIN sitekb.aliases a USING (snapshot_id)
               WHERE s.run_id = %s GROUP BY s.snapshot_id""",
            (run_id,),
        ).fetchone()
    return run, snap
