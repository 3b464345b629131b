"""The local engine: start a run, execute stages from the registry, record and log what each did.

:func:`start` records a run with its effective site config and the embedder
it chooses (once; every later stage and task uses that one). :func:`execute`
runs one stage of a run: the Airflow tasks call it one stage per task, and
:func:`refresh`, :func:`rebuild`, :func:`rerun` and :func:`dry_run` call it for
each stage of their plan, in this process. Executing a stage times it, stores its record
under ``sitekb.runs.stages`` and logs what it did; a stage that stops the run
(the quality gate) has its record stored before its error is raised.

Which errors end a run is the caller's choice: the local engine fails the run
on any error; the Airflow corner fails it on terminal errors and leaves
transient ones to Airflow's retries.

A database connection lost in the middle of a stage (``psycopg.OperationalError``
from anywhere below, with the connection broken) becomes one
:class:`~sitekb.errors.DatabaseUnavailable` here, in the local driver, and
nowhere else: under Airflow the same loss stays an ordinary failure that the
task's retries handle. The run is marked failed over a new connection if the
database is back already; if not, it stays marked running, and the site's next
start finds its process gone (:func:`process_gone`), marks it failed and
cleans up after it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import psycopg

from sitekb import restage, stages, store
from sitekb.embedding import choose
from sitekb.errors import DatabaseUnavailable, SitekbError, TransientError, database_lost
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings
from sitekb.sites import SiteConfig
from sitekb.stages import RunContext, Stage, StageResult
from sitekb.store import documents, runs, snapshots

log = logging.getLogger(__name__)


def new_run_id(site: str, prefix: str = "cli") -> str:
    """``<site>__<prefix>__<UTC time>__<random>``: a run id names its site and where it came from."""
    return f"{site}__{prefix}__{datetime.now(timezone.utc):%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:6]}"


def start(conn: psycopg.Connection, settings: Settings, site: SiteConfig, run_id: str,
          params: dict | None = None, embedding: dict | None = None, *,
          gone: Callable[[dict], str | None] | None = None, held_by: dict | None = None) -> runs.Run:
    """Record the run, its effective config and the embedder it chooses (a retried start changes nothing).

    ``embedding`` keeps an embedder recorded before instead of choosing one (a rerun that keeps the chunks).
    Another run of the site still marked running stops this one (RunInProgress) unless ``gone`` (default:
    :func:`process_gone`) says it is dead: then it is marked failed and its staged rows and half-built
    snapshot are cleaned up here. ``held_by``: who runs it (default: this process, :func:`holder`).
    """
    params = {**(params or {}), "holder": held_by or holder()}
    run, taken_over = runs.start(conn, site, run_id, params, embedding or choose(site.embedding, settings).as_dict(),
                                 gone=gone or process_gone)
    for dead in taken_over:
        documents.discard_run(conn, dead)
        dropped = snapshots.abandon_building(conn, dead)
        log.info("run %s of %s was marked failed (its process is gone) and cleaned up%s", dead, site.name,
                 f"; its half-built snapshot {dropped} was dropped" if dropped else "")
    log.info("run %s of %s started (config %s, embedding %s:%s)", run_id, site.name, site.config_hash(),
             run.embedding["provider"], run.embedding["model"])
    return run


def holder() -> dict:
    """Who runs a run: this process and host (and when the process started, against pid reuse)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": _process_start(os.getpid())}


def process_gone(params: dict) -> str | None:
    """Why the process of a run is dead (None: alive, or not on this host, or unknown)."""
    held = params.get("holder") or {}
    pid = held.get("pid")
    if not pid or held.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return f"its process {pid} on {held['host']} is gone"
    except PermissionError:
        return None
    if held.get("since") is not None and _process_start(int(pid)) not in (None, held["since"]):
        return f"its process {pid} on {held['host']} is gone (the id now names another process)"
    return None


def declare_gone(params: dict) -> str:
    """For ``sitekb run --take-over``: every other running run of the site is declared gone."""
    return f"taken over on request ({runs.holder_text(params)})"


def _process_start(pid: int) -> int | None:
    # Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot (Linux only).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def context(conn: psycopg.Connection, settings: Settings, database_url: str, run_id: str) -> RunContext:
    """The context of a recorded run, as a stage sees it."""
    return RunContext(run=runs.load(conn, run_id), settings=settings, database_url=database_url, conn=conn)


def execute(stage: Stage, ctx: RunContext) -> StageResult:
    """Run one stage, store its record with the run and log it; raise what the stage raised or stopped with."""
    log.info("[%s] %s ...", stage.name, stage.does)
    started = time.monotonic()
    result = stage.run(ctx)
    seconds = round(time.monotonic() - started, 3)
    if result.replayed:   # a finished run: the stage did nothing, and its record stays as it was
        log.info("[%s] %s", stage.name, result.summary)
        return result
    runs.record_stage(ctx.conn, ctx.run_id, stage.name, {**result.record(), "seconds": seconds})
    log.info("[%s] %s (%.2fs)", stage.name, result.summary or "done", seconds)
    if result.stop is not None:
        raise result.stop
    return result


def refresh(settings: Settings, site: SiteConfig, *, run_id: str | None = None, alias: str = DEFAULT_ALIAS,
            full_recrawl: bool = False, actor: str | None = None, take_over: bool = False,
            progress: Callable[[str, int, int], None] | None = None, rebuild_of: str | None = None) -> str:
    """One whole refresh in this process; return the run id. Raises a SitekbError on failure.

    ``progress(stage, done, total)`` hears how far a long stage has come (the CLI draws it on a terminal).
    ``take_over``: another run of the site still marked running is marked failed instead of stopping this one.
    ``rebuild_of``: the crawl stage takes up that run's pages instead of crawling (:func:`rebuild`).
    """
    params = {"alias": alias, "full_recrawl": full_recrawl, **({"actor": actor} if actor else {}),
              **({"rebuild_of": rebuild_of} if rebuild_of else {})}
    with _database(settings) as (url, conn):
        run = start(conn, settings, site, run_id or new_run_id(site.name, "rebuild" if rebuild_of else "cli"), params,
                    gone=declare_gone if take_over else None)
        ctx = RunContext(run=run, settings=settings, database_url=url, conn=conn, progress=progress)
        _prewarm(ctx)
        if site.airflow.approval.required:
            # A content owner decides before the alias moves; this process cannot wait for one.
            _run_plan(ctx, stages.STAGES[: stages.NAMES.index("publish")])
            snap = snapshots.for_run(conn, run.run_id)
            runs.finish(conn, run.run_id, "succeeded")
            log.info("site %s requires approval: snapshot %s is validated and not published; a content owner "
                     "publishes it with `sitekb snapshots publish %s --alias %s --reason ...`, or runs the site's "
                     "DAG in Airflow, which asks for the approval", site.name, snap.snapshot_id, snap.snapshot_id,
                     alias)
            return run.run_id
        _run_plan(ctx, stages.STAGES)
    return run.run_id


def rebuild_plan(settings: Settings, site: SiteConfig) -> tuple[str, SiteConfig]:
    """The run a rebuild of ``site`` takes its pages from, and the config it runs with (:func:`restage.plan`).

    Raises NotFound, changing nothing, when the site has no finished crawl to rebuild from.
    """
    with _database(settings) as (_, conn):
        return restage.plan(conn, site)


def rebuild(settings: Settings, site: SiteConfig, *, run_id: str | None = None, alias: str = DEFAULT_ALIAS,
            actor: str | None = None, take_over: bool = False,
            progress: Callable[[str, int, int], None] | None = None) -> str:
    """A new snapshot from the pages the site's newest crawl kept, with the config as it is now; no request is sent.

    A new run (id ``<site>__rebuild__...``, params ``rebuild_of``) of every
    registered stage: the crawl stage takes up the stored pages, judged again by
    the current config (:mod:`sitekb.restage`), and the stages after it run as in
    a refresh, so only chunk texts the embedding cache lacks are embedded, the
    same gate judges the snapshot, and a site that requires approval gets a
    validated snapshot left for a content owner. Refused, changing nothing: no
    finished crawl to take pages from (NotFound), another run of the site
    running (RunInProgress, unless ``take_over``). Returns the run id.
    """
    source, site = rebuild_plan(settings, site)
    log.info("rebuild of %s from the pages of run %s (config %s)", site.name, source, site.config_hash())
    return refresh(settings, site, run_id=run_id, alias=alias, actor=actor, take_over=take_over, progress=progress,
                   rebuild_of=source)


def rerun(settings: Settings, site: SiteConfig, from_stage: str, *, run_id: str | None = None,
          force: bool = False, progress: Callable[[str, int, int], None] | None = None) -> str:
    """Run ``from_stage`` and every stage after it again, for the site's newest run (or ``run_id``).

    The earlier stages keep their output. The run takes up the site config as it
    is now (a changed threshold applies). From ``chunk`` or earlier it chooses
    its embedder again (chunks are cut to the embedder's tokenizer); from
    ``embed`` on it keeps the one it recorded, so the snapshot describes the
    chunks it holds. Refused: a run that succeeded (its snapshot may be live),
    and one still marked running unless ``force`` (its process may still be at
    work; force it when that process was killed). Returns the run id.
    """
    plan = stages.starting_at(from_stage)
    with _database(settings) as (url, conn):
        run_id = run_id or runs.newest(conn, site.name)
        before = runs.load(conn, run_id)
        if before.site.name != site.name:
            raise SitekbError(f"run {run_id!r} belongs to site {before.site.name!r}, not {site.name!r}")
        if before.params.get("dry_run"):
            raise SitekbError(f"run {run_id!r} was a dry run and kept nothing to take up; "
                              f"`sitekb run {site.name}` starts a real one")
        if before.status == "running" and not force:
            raise SitekbError(f"run {run_id!r} is still marked running: another process may be working on it. "
                              "If that process is gone (killed, or its machine lost), take the run up with --force")
        keeps_chunks = stages.NAMES.index(from_stage) > stages.NAMES.index("chunk")
        run = start(conn, settings, site, run_id, before.params, before.embedding if keeps_chunks else None)
        if before.site.config_hash() != site.config_hash():
            log.info("run %s takes up the site config as it is now (%s, was %s)", run_id, site.config_hash(),
                     before.site.config_hash())
        ctx = RunContext(run=run, settings=settings, database_url=url, conn=conn, progress=progress)
        _run_plan(ctx, plan)
    return run_id


def dry_run(settings: Settings, site: SiteConfig, *, rebuild_of: str | None = None) -> dict:
    """Crawl, extract, validate and chunk into a throw-away run and report what embedding it would cost.

    The run's documents and chunks are deleted afterwards (pages fetched stay,
    as after any crawl); its record stays, marked succeeded, with what each stage did.
    ``rebuild_of``: a rebuild's dry run (:func:`rebuild_plan`): the pages of that run are taken up, not fetched.
    """
    params = {"dry_run": True, **({"rebuild_of": rebuild_of} if rebuild_of else {})}
    with _database(settings) as (url, conn):
        run = start(conn, settings, site, new_run_id(site.name, "dryrun"), params)
        ctx = RunContext(run=run, settings=settings, database_url=url, conn=conn)
        try:
            results = _run_plan(ctx, [stages.get(name) for name in stages.DRY_RUN])
        finally:
            documents.discard_run(conn, run.run_id)
        runs.finish(conn, run.run_id, "succeeded")
    crawl, validate, chunk, embed = (results[n].counts for n in ("crawl", "validate", "chunk", "embed"))
    return {"site": site.name, "pages": crawl["pages"], "documents": validate["accepted"],
            "quarantined": validate["quarantined"], "chunks": chunk["chunks"], "tokens": chunk["tokens"],
            **{k: embed[k] for k in ("texts_to_embed", "tokens_to_embed", "estimated_usd", "price_per_million_usd",
                                     "spent_usd")}}


@contextmanager
def _database(settings: Settings) -> Iterator[tuple[str, psycopg.Connection]]:
    """The database URL (a stage may hand it to a subprocess) and a migrated connection to it."""
    url = store.database_url(settings)
    with store.connection(url) as conn:
        store.migrate(conn)
        yield url, conn


def _run_plan(ctx: RunContext, plan: Iterable[Stage]) -> dict[str, StageResult]:
    """Execute ``plan`` in order; any error fails the run (a run the gate blocked stays blocked).

    The error raised names the run and the stage (``run_id``, ``stage``); a lost
    database connection is raised as one DatabaseUnavailable (:func:`_database_lost`).
    """
    results = {}
    stage_name = None
    try:
        for stage in plan:
            stage_name = stage.name
            results[stage.name] = execute(stage, ctx)
    except BaseException as exc:
        lost = _fail(ctx, exc)
        if lost is not None and isinstance(exc, Exception):
            # The database went away (a stage may have met it first and said so in its own words).
            cause = exc if isinstance(exc, psycopg.OperationalError) else lost
            raise _database_lost(ctx, stage_name, cause) from exc
        if isinstance(exc, (SitekbError, TransientError)) and exc.run_id is None:
            exc.run_id, exc.stage = ctx.run_id, stage_name
        raise
    return results


def _fail(ctx: RunContext, exc: BaseException) -> psycopg.OperationalError | None:
    """Mark the run failed; return the error of a lost connection that kept it from being marked."""
    try:
        runs.fail(ctx.conn, ctx.run_id, exc)
    except psycopg.OperationalError as lost:
        if not (ctx.conn.broken or ctx.conn.closed):
            raise
        return lost
    return None


def _database_lost(ctx: RunContext, stage: str | None, exc: BaseException) -> DatabaseUnavailable:
    """The one error of a connection lost mid-run; the run is marked failed now if the database is back."""
    where = f" in stage {stage} of run {ctx.run_id}" if stage else f" during run {ctx.run_id}"
    unpublished = "" if stage == "publish" else "; nothing was published"
    try:
        with store.connection(ctx.database_url) as conn:
            runs.fail(conn, ctx.run_id, database_lost(exc, where))
        then = f"{unpublished}; the run is marked failed"
    except (DatabaseUnavailable, psycopg.Error):
        then = (f"{unpublished}. Once the database is back, the site's next run marks this one failed and "
                "cleans up after it")
    return database_lost(exc, where, then)


def _prewarm(ctx: RunContext) -> None:
    # Importing torch and loading a local model takes seconds: do it while the crawl runs.
    prewarm: Callable[[], None] | None = getattr(ctx.embedder, "prewarm", None)
    if prewarm is not None:
        prewarm()
