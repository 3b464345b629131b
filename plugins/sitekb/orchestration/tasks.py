"""Task bodies of the sitekb DAGs: one task per registered stage, each a few lines over the engine.

:func:`stage_task` turns a :class:`sitekb.stages.Stage` into an Airflow task
(its id, timeout and retry policy come from the registry), so the DAG factory
(:mod:`sitekb.orchestration.dag_factory`) wires the registry and holds no stage
of its own. XCom carries the run id, shard numbers and each stage's small
counts only; pages, chunks and vectors move through Postgres. A
:class:`sitekb.errors.SitekbError` (bad config, quality gate, budget) fails the
task without retry and with its message, and marks the run failed; anything
else (lost connection, HTTP 429 after the client's own retries) is left to
Airflow's retries. Every task logs the site, the run and what its stage did.

Every task can run again on a finished run (Airflow's "clear task" after the
run succeeded or was blocked): :func:`run_context` then skips the task with
the reason (:meth:`sitekb.stages.RunContext.finished`), before anything is
read or written, so nothing is rebuilt, judged, demoted or published again,
and no callback fires (no notification is sent twice, no Asset event is
emitted again); ``start`` hands the run id on unchanged, the approval is not
asked again, and only ``report`` reads the finished run.

Settings read: :func:`sitekb.orchestration.settings.task_settings`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from sitekb import engine, report as reports, restage, store
from sitekb.errors import SitekbError
from sitekb.orchestration.settings import task_settings
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import PROCESS_ENVIRONMENT
from sitekb.sites import SiteConfig, resolve_site
from sitekb.stages import Stage, get
from sitekb.stages.context import finished
from sitekb.store import runs, snapshots

log = logging.getLogger(__name__)

DEMO_SITE = "demo"
# A dry run stops after the embed stage's estimate: these tasks are skipped.
_NOT_IN_DRY_RUN = ("build", "evaluate", "publish")


def _prepare() -> None:
    # A task process is an entry point: the libraries sitekb loads read these.
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


@contextmanager
def _terminal_errors() -> Iterator[None]:
    try:
        yield
    except SitekbError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def run_context(run_id: str, *, finished_ok: bool = False):
    """The run's stage context with this task's settings and a connection; sitekb errors fail the task.

    A finished run (succeeded or blocked) skips the task with the reason, unless ``finished_ok`` (a task that
    only reads, like ``report``).
    """
    _prepare()
    settings = task_settings()
    url = store.database_url(settings)
    with _terminal_errors(), store.connection(url) as conn:
        ctx = engine.context(conn, settings, url, run_id)
        why = None if finished_ok else ctx.finished()
        if why is not None:
            raise AirflowSkipException(f"sitekb {ctx.site.name}: {why}")
        yield ctx


def skip_if_finished(context) -> None:
    """A task's ``pre_execute`` hook: skip an operator sitekb does not write (the approval) on a finished run."""
    run_id = context["ti"].xcom_pull(task_ids="start")
    if run_id:
        with run_context(run_id):
            pass


def start(site_file: str, params: dict, dag_run_id: str) -> str:
    """Resolve the site config, record the run and the embedder it chooses; return the run id."""
    _prepare()
    settings = task_settings()
    with _terminal_errors():
        config = resolve_site(site_file, settings)
        # The demo is served elsewhere in a stack (SITEKB_DEMO_START_URL); a start_url param wins.
        origin = params.get("start_url") or (settings.demo_start_url if config.name == DEMO_SITE else None)
        if origin:
            config = config.with_base_url(origin)
        run_id = f"{config.name}__{dag_run_id}"
        with store.connection(store.database_url(settings)) as conn:
            store.migrate(conn)
            why = finished(runs.find(conn, run_id))
            if why is not None:
                # A cleared start task of a finished run must not set it running again; the later tasks skip.
                log.info("sitekb %s: nothing to start: %s", config.name, why)
                return run_id
            rebuild = {}
            if params.get("rebuild"):
                # No crawl: the crawl task takes up the pages of the site's newest crawl (sitekb.restage).
                # A retried start of this run finds itself the newest: it keeps the source it recorded.
                recorded = runs.find(conn, run_id)
                source, config = restage.plan(conn, config, recorded.params.get("rebuild_of") if recorded else None)
                rebuild = {"rebuild_of": source}
            engine.start(conn, settings, config, run_id, {
                "alias": params.get("alias") or DEFAULT_ALIAS,
                "full_recrawl": bool(params.get("full_recrawl")),
                "dry_run": bool(params.get("dry_run")),
                "actor": f"airflow:{dag_run_id}",
                **rebuild,
            }, held_by={"airflow": dag_run_id}, gone=_gone_for_airflow(dag_run_id))
    log.info("sitekb %s: run %s started for %s (%s)", config.name, run_id, config.base_url,
             ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v not in (None, False, "")) or "defaults")
    return run_id


def _gone_for_airflow(dag_run_id: str):
    """A site's DAG runs one DAG run at a time: a run another DAG run of it left running is over."""
    def gone(params: dict) -> str | None:
        held = params.get("holder") or {}
        if held.get("airflow") and held["airflow"] != dag_run_id:
            return f"its Airflow DAG run {held['airflow']} has ended (a site's DAG runs one at a time)"
        return engine.process_gone(params)
    return gone


def run_stage(name: str, run_id: str, *, outlet_events=None, approval: dict | None = None) -> dict:
    """Run one stage of ``run_id``; return its counts (what XCom carries)."""
    with run_context(run_id) as ctx:
        if name in _NOT_IN_DRY_RUN and ctx.params.get("dry_run"):
            raise AirflowSkipException(f"sitekb {ctx.site.name}: dry run, the {name} stage does not run")
        if name == "publish" and approval is not None:
            _apply_approval(ctx, approval)
        log.info("sitekb %s: run %s, stage %s", ctx.site.name, run_id, name)
        try:
            result = engine.execute(get(name), ctx)
        except SitekbError as exc:
            runs.fail(ctx.conn, run_id, exc)
            raise
        if name == "embed" and ctx.params.get("dry_run"):
            from sitekb.store import documents

            documents.discard_run(ctx.conn, run_id)
            runs.finish(ctx.conn, run_id, "succeeded")
        counts = dict(result.counts)
        if name == "evaluate":
            counts["review"] = reports.review_markdown(ctx.conn, run_id)
    if outlet_events is not None and counts.get("alias"):
        from airflow.sdk import Asset

        from sitekb.orchestration.dag_factory import asset_alias
        from sitekb.orchestration.naming import asset_uri

        # The publish stage moved an alias: tell downstream DAGs which snapshot is live.
        outlet_events[asset_alias(ctx.site.name)].add(
            Asset(asset_uri(ctx.site.name, counts["alias"])),
            extra={"site": ctx.site.name, "alias": counts["alias"], "snapshot_id": counts.get("snapshot_id"),
                   "previous": counts.get("previous"), "run_id": run_id},
        )
    return counts


def _apply_approval(ctx, approval: dict) -> None:
    """Who approved the snapshot, and why, become the publish's actor and reason in the alias audit log."""
    user = approval.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") or "unknown"
    why = ((approval.get("params_input") or {}).get("reason") or "").strip() or "no reason given"
    ctx.run.params.update({"actor": f"airflow-user:{who}", "reason": f"approved: {why}", "decision": "approved"})
    log.info("sitekb %s: snapshot approved by %s: %s", ctx.site.name, who, why)


def embed_plan(run_id: str) -> list[list[int]]:
    """Estimate, check the budget, and cut the texts the cache lacks into shards ``[i, n]`` (XCom: ids only)."""
    from sitekb.embedding import check_budget, estimate_cost

    with run_context(run_id) as ctx:
        estimate = estimate_cost(ctx.conn, run_id, ctx.embedder)
        missing = estimate["texts_to_embed"]
        section = ctx.site.airflow
        if ctx.params.get("dry_run") or not missing:
            log.info("sitekb %s: %s; no embed shard", ctx.site.name,
                     "dry run" if ctx.params.get("dry_run") else "every text is cached")
            return []
        check_budget(estimate, ctx.site.embedding.budget_usd)
        count = max(1, min(section.max_embed_shards, math.ceil(missing / section.embed_shard_texts)))
        log.info("sitekb %s: %d texts to embed (%d tokens, estimated $%.4f) in %d shard(s) of ~%d",
                 ctx.site.name, missing, estimate["tokens_to_embed"], estimate["estimated_usd"], count,
                 math.ceil(missing / count))
        return [[i, count] for i in range(count)]


def embed_shard(run_id: str, shard: list[int]) -> dict:
    """Embed one shard of the run's missing texts into the cache; return small counts."""
    from sitekb.embedding import embed_run

    index, count = int(shard[0]), int(shard[1])
    with run_context(run_id) as ctx:
        result = embed_run(ctx.conn, run_id, ctx.embedder, batch_size=ctx.site.embedding.batch_size,
                           budget_usd=ctx.site.embedding.budget_usd, shard=(index, count))
        log.info("sitekb %s: shard %d/%d: %d texts embedded in %d requests (%d tokens, $%.4f) on %s:%s",
                 ctx.site.name, index + 1, count, result.embedded, result.requests, result.tokens, result.usd,
                 ctx.embedder.provider, ctx.embedder.model)
        return {"shard": index, "of": count, "embedded": result.embedded, "requests": result.requests,
                "tokens": result.tokens, "spent_usd": result.usd}


def report(run_id: str | None, site: str) -> dict:
    """The run's summary for its note (set by the listener) and the log."""
    if not run_id:
        return {"note": f"sitekb {site}: the run did not start (see the start task's log)"}
    with run_context(run_id, finished_ok=True) as ctx:
        summary = reports.run_summary(ctx.conn, run_id)
        note = reports.format_note(summary)
    for line in note.splitlines():
        log.info("%s", line)
    return {"status": summary["status"], "snapshot_id": summary["snapshot_id"], "note": note}


def mark_run_failed(context) -> None:
    """A task's final failure (no retry left) ends the sitekb run as failed, with the reason, not running."""
    ti = context["ti"]
    try:
        run_id = ti.xcom_pull(task_ids="start")
        if not run_id or ti.task_id == "start":
            return
        settings = task_settings()
        with store.connection(store.database_url(settings)) as conn:
            runs.fail(conn, run_id, f"task {ti.task_id} failed: {context.get('exception') or 'no reason given'}")
    except Exception:  # noqa: BLE001 - a callback must not hide the task's own failure
        log.exception("sitekb could not mark the run of %s failed", ti.run_id)


def published_snapshot(extra: dict) -> dict:
    """What a downstream DAG learns from a publish's Asset event: the snapshot it names, as the store has it."""
    _prepare()
    settings = task_settings()
    with _terminal_errors(), store.connection(store.database_url(settings)) as conn:
        snap = snapshots.get(conn, int(extra["snapshot_id"]))
        live = snapshots.resolve(conn, snap.site, extra.get("alias") or DEFAULT_ALIAS)
    facts = {"site": snap.site, "alias": extra.get("alias"), "snapshot_id": snap.snapshot_id, "state": snap.state,
             "chunks": snap.counts.get("chunks"), "still_live": live.snapshot_id == snap.snapshot_id}
    log.info("sitekb %s: snapshot %s is %s on %s (%s chunks)", snap.site, snap.snapshot_id, snap.state,
             facts["alias"], facts["chunks"])
    return facts


def stage_task(stage: Stage, *, outlets: list | None = None, **options):
    """The Airflow task of one registered stage: takes the run id and the previous stage's counts."""
    options = {"task_id": stage.name, "doc_md": stage.does, **options}
    if stage.timeout_hours:
        options["execution_timeout"] = timedelta(hours=stage.timeout_hours)
    if not stage.retry:
        options["retries"] = 0
    if outlets:
        options["outlets"] = outlets

        @task(**options)
        def publish_body(run: str, previous=None, approval: dict | None = None, *, outlet_events=None) -> dict:
            return run_stage(stage.name, run, outlet_events=outlet_events, approval=approval)

        return publish_body

    @task(**options)
    def body(run: str, previous=None) -> dict:
        return run_stage(stage.name, run)

    return body


def approval_task(config: SiteConfig):
    """The content owner's decision before the alias moves (Airflow's Human-in-the-loop ApprovalOperator)."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator
    from airflow.sdk import Param

    from sitekb.orchestration import notify

    section = config.airflow.approval
    assigned = [{"id": user, "name": user} for user in section.approvers] or None
    return ApprovalOperator(
        task_id="approve",
        subject=f"Publish the new {config.name} snapshot?",
        body="{{ ti.xcom_pull(task_ids='evaluate')['review'] }}",
        params={"reason": Param("", type="string", description="Why (recorded in the alias audit log)")},
        assigned_users=assigned,
        response_timeout=timedelta(hours=section.timeout_hours),
        notifiers=[notify.SitekbNotifier(site=config.name, targets=[n.model_dump(mode="json")
                                                                      for n in config.airflow.notifiers],
                                         event="approval")],
        on_success_callback=[_record_rejection],
        # A finished run is not put to its approvers again (nor are they notified again).
        pre_execute=skip_if_finished,
        retries=0,
    )


def _record_rejection(context) -> None:
    """A Reject answer: the snapshot is rejected, the run blocked, the decision in the alias audit log."""
    ti = context["ti"]
    answer = ti.xcom_pull(task_ids=ti.task_id) or {}
    if (answer.get("chosen_options") or [None])[0] != "Reject":
        return
    run_id = ti.xcom_pull(task_ids="start")
    user = answer.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") or "unknown"
    why = ((answer.get("params_input") or {}).get("reason") or "").strip() or "no reason given"
    with run_context(run_id, finished_ok=True) as ctx:
        over = ctx.finished()
        if over is not None:
            # A callback cannot skip its task: a finished run keeps its verdict, audit log and alerts as they are.
            log.info("sitekb %s: the answer of %s is not recorded: %s", ctx.site.name, who, over)
            return
        snap = snapshots.for_run(ctx.conn, run_id)
        if snap is not None:
            snapshots.reject(ctx.conn, snap.snapshot_id, ctx.params.get("alias") or DEFAULT_ALIAS,
                             actor=f"airflow-user:{who}", reason=why)
        runs.finish(ctx.conn, run_id, "blocked", f"rejected by {who}: {why}")
        log.info("sitekb %s: snapshot %s rejected by %s: %s", ctx.site.name, snap.snapshot_id if snap else "-",
                 who, why)
        targets = [n.model_dump(mode="json") for n in ctx.site.airflow.notifiers]
    from sitekb.orchestration import notify

    notify.send(targets, "rejected", site=ctx.site.name,
                text=f"sitekb {ctx.site.name}: the new snapshot was rejected by {who} and not published: {why}",
                details={"run_id": context["dag_run"].run_id, "task_id": ti.task_id, "rejected_by": who})


def compact_due() -> list[dict]:
    """The maintenance DAG's task: compact every site's live and newest snapshots whose compaction is due."""
    from sitekb.store import segments

    _prepare()
    settings = task_settings()
    results = []
    with _terminal_errors(), store.connection(store.database_url(settings)) as conn:
        for site in snapshots.built_sites(conn):
            for snapshot_id in snapshots.compaction_targets(conn, site):
                try:
                    result = segments.compact(conn, snapshot_id)
                except SitekbError as exc:   # retention or another compaction got there first: next time
                    log.warning("sitekb %s: snapshot %s not compacted: %s", site, snapshot_id, exc)
                    continue
                if result["compacted"]:
                    log.info("sitekb %s: snapshot %s compacted (%s) into segment %s, %s rows, in %.1fs",
                             site, snapshot_id, result["due"], result["segment_id"], result["rows"],
                             result["build_seconds"])
                results.append({"site": site, **{k: result.get(k) for k in (
                    "snapshot_id", "compacted", "due", "segment_id", "rows", "dropped_segments")}})
        dropped = segments.drop_unreferenced(conn)
    if dropped:
        log.info("sitekb: dropped segments no snapshot lists: %s", dropped)
    return results
