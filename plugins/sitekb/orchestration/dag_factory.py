"""One Airflow DAG per site file: ``dags/sites/<name>.yaml`` becomes the DAG ``sitekb_<name>``.

:func:`site_dags` reads every ``*.yaml`` in the sites folder (``SITEKB_SITES_DIR``,
default ``dags/sites``) and builds each valid one's DAG from its ``airflow``
section (:class:`sitekb.sites.AirflowConfig`): schedule (cron, preset, or the
Assets it waits for), owner, tags, retries, params (``full_recrawl``,
``dry_run``, ``alias``, ``start_url``, ``rebuild``), notifiers, a freshness deadline, an
approval step, and a ``doc_md`` written from the file. A file that does not
validate builds no DAG; :func:`raise_config_errors` (the DAG file
``dags/sitekb_site_errors.py``) turns the errors into one Airflow import error
that names each file and field, while every other site's DAG still loads from
``dags/sitekb_sites.py``.

The demo site is never scheduled unless its file sets ``airflow.schedule``.

The tasks, in order (each a few lines over :mod:`sitekb.orchestration.tasks`):

    start → crawl → extract → validate → chunk → embed_plan → embed_shard[i] (mapped)
          → embed → build → evaluate → [approve] → publish → report, outcome

``embed_shard`` runs once per shard of the texts the cache lacks, in the pool
``sitekb_embed_<provider>`` (which bounds concurrent embedding calls across all
sites); ``embed`` then records the stage and embeds any leftover; ``report``
runs whatever happened and leaves the summary that becomes the run's note;
``outcome`` (an empty leaf after ``publish``) gives the DAG run its stages' state.
Parsing does no I/O beyond reading the site files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, Param
from airflow.sdk.definitions.asset import AssetAlias

from sitekb.errors import ConfigError
from sitekb.orchestration import notify, tasks
from sitekb.orchestration.naming import dag_id, pool_name
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings
from sitekb.sites import SiteConfig, load_site
from sitekb.stages import STAGES

log = logging.getLogger(__name__)

DEMO_SITE = "demo"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def asset_alias(site: str) -> AssetAlias:
    """The publish task's outlet: resolved at run time to the Asset of the alias it moved."""
    return AssetAlias(name=f"sitekb_{site}_published")


@dataclass
class SiteDags:
    """What the sites folder gave: a DAG per valid file, and the problems of the others."""

    dags: dict[str, DAG] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)   # file -> what is wrong, naming the field


def site_dags(settings: Settings | None = None) -> SiteDags:
    """A DAG for every valid site file; a broken file is reported, not raised."""
    settings = settings or Settings.from_env()
    found = SiteDags()
    for path in sorted(Path(settings.sites_dir).glob("*.y*ml")):
        try:
            config = load_site(str(path), settings.site_overrides(), sites_dir=settings.sites_dir)
            dag = build_dag(config, path)
        except ConfigError as exc:
            found.errors[str(path)] = str(exc)
            continue
        if dag.dag_id in found.dags:
            found.errors[str(path)] = (f"{path}: name: site {config.name!r} is already defined by another file "
                                       "in the folder; each site needs its own name")
            continue
        found.dags[dag.dag_id] = dag
    return found


def raise_config_errors(settings: Settings | None = None) -> None:
    """Raise one ConfigError listing every site file that builds no DAG (an Airflow import error)."""
    errors = site_dags(settings).errors
    if errors:
        raise ConfigError(
            f"{len(errors)} site file(s) build no DAG; the other sites' DAGs are loaded.\n\n"
            + "\n\n".join(errors.values())
        )


def schedule_of(config: SiteConfig):
    """The DAG schedule: the Assets it waits for, the cron/preset, or None (the demo unless it says so)."""
    section = config.airflow
    if section.schedule_assets:
        assets = [Asset(uri) for uri in section.schedule_assets]
        schedule = assets[0]
        for asset in assets[1:]:
            schedule = schedule | asset
        return schedule
    if config.name == DEMO_SITE and "schedule" not in section.model_fields_set:
        return None
    return section.schedule


def build_dag(config: SiteConfig, path: Path) -> DAG:
    """The DAG of one site (no I/O: everything comes from the validated config)."""
    from airflow.sdk import task

    section = config.airflow
    failure = notify.SitekbNotifier(site=config.name, targets=_targets(config), event="failed")
    default_args = {
        "owner": section.owner,
        "retries": section.retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "on_failure_callback": [tasks.mark_run_failed, failure],
    }
    params = {
        "full_recrawl": Param(False, type="boolean", description="Fetch every page again (no conditional GET)"),
        "dry_run": Param(False, type="boolean",
                         description="Crawl, extract, validate and chunk, estimate the embedding cost, publish nothing"),
        "alias": Param(DEFAULT_ALIAS, type="string", minLength=1, maxLength=63, description="Alias to publish to"),
        "start_url": Param(None, type=["null", "string"],
                           description="Serve the site from another origin (e.g. the demo on a free port)"),
        "rebuild": Param(False, type="boolean",
                         description="No crawl: rebuild from the pages the newest crawl kept, with the config as it "
                                     "is now (sitekb rebuild)"),
    }
    dag_kwargs = {}
    if section.freshness_hours:
        dag_kwargs["deadline"] = notify.freshness_deadline(config.name, section.freshness_hours, _targets(config))
    with DAG(
        dag_id=dag_id(config.name),
        description=(config.description or f"sitekb knowledge base of {config.base_url}")[:200],
        schedule=schedule_of(config),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=section.max_active_runs,
        default_args=default_args,
        tags=sorted({"sitekb", f"site:{config.name}", *section.tags}),
        doc_md=doc_md(config, path),
        params=params,
        # Collected from dags/sitekb_sites.py's globals only (sitekb_site_errors.py builds them too, to check).
        auto_register=False,
        **dag_kwargs,
    ) as dag:
        @task(task_id="start", retries=section.retries, doc_md="record the run and the embedder it chooses")
        def start(params=None, run_id=None) -> str:
            return tasks.start(str(path), params, run_id)

        run = start()
        previous = None
        for stage in STAGES:   # the registry's order; a new stage gets its task here like any other
            if stage.name == "embed":
                previous = _mapped_embedding(config, run, previous)
                # No shard at all (all cached, or a dry run) skips the mapped task: embed runs anyway.
                previous = tasks.stage_task(stage, trigger_rule="none_failed")(run, previous)
            elif stage.name == "publish":
                approve = None
                if section.approval.required:
                    approve = tasks.approval_task(config)
                    previous >> approve
                published = notify.SitekbNotifier(site=config.name, targets=_targets(config), event="published")
                previous = tasks.stage_task(stage, outlets=[asset_alias(config.name)],
                                            on_success_callback=[published])(
                    run, previous, approval=approve.output if approve is not None else None)
            else:
                previous = tasks.stage_task(stage)(run, previous)

        @task(task_id="report", trigger_rule="all_done", retries=1,
              doc_md="summarise the run: the DAG run's note and the log's last lines")
        def report(run: str | None) -> dict:
            return tasks.report(run, config.name)

        report(run).set_upstream(previous)
        # Airflow judges a DAG run by its leaves: `report` always succeeds, so this second leaf carries the
        # stages' outcome (a rejected snapshot fails the run; a dry run's skipped publish does not).
        previous >> EmptyOperator(task_id="outcome", doc_md="fails with the stages: the DAG run's state")
    return dag


def _mapped_embedding(config: SiteConfig, run, previous):
    """``embed_plan`` and the ``embed_shard`` tasks mapped over its shards; returns the shards' output."""
    from airflow.sdk import task

    pool = pool_name(config.embedding.provider)

    @task(task_id="embed_plan", doc_md="estimate the cost, check the budget, cut the missing texts into shards")
    def embed_plan(run: str, chunked: dict | None = None) -> list[list[int]]:
        return tasks.embed_plan(run)

    plan = embed_plan(run, previous)
    if config.embedding.batch_api:
        from sitekb.orchestration.batch import BatchEmbedShardOperator

        return BatchEmbedShardOperator.partial(task_id="embed_shard", pool=pool, sitekb_run=run).expand(
            shard=plan).output

    @task(task_id="embed_shard", pool=pool, doc_md="embed one shard of the texts the cache lacks",
          execution_timeout=timedelta(hours=6))
    def embed_shard(run: str, shard: list[int]) -> dict:
        return tasks.embed_shard(run, shard)

    return embed_shard.partial(run=run).expand(shard=plan)


def _targets(config: SiteConfig) -> list[dict]:
    return [n.model_dump(mode="json") for n in config.airflow.notifiers]


def doc_md(config: SiteConfig, path: Path) -> str:
    """The DAG's documentation, written from the site file."""
    section = config.airflow
    schedule = schedule_of(config)
    when = ("when " + " or ".join(section.schedule_assets) + " is updated" if section.schedule_assets
            else f"`{schedule}`" if schedule else "manual only (trigger it)")
    golden = "\n".join(f"- {g.question} → `{g.expected_url}`" for g in config.golden_questions[:20]) or "- none"
    notifiers = ", ".join(f"{n.kind} ({', '.join(n.events)})" for n in section.notifiers) or "none"
    return f"""### sitekb · {config.name}

{config.description or ''}

Crawls **{config.base_url}** ({len(config.start_urls)} start URL(s), at most {config.crawl.max_pages} pages,
depth {config.crawl.max_depth}), checks the content (at least {config.quality.min_words} words, languages
{', '.join(config.quality.languages)}), chunks it ({config.chunking.target_tokens} tokens), embeds it
(`{config.embedding.provider}` {config.embedding.model or '(default model)'}; pool `{pool_name(config.embedding.provider)}`),
builds a new immutable snapshot and publishes it to the alias (`{DEFAULT_ALIAS}` by default) if it passes the
quality gate and the golden questions; then emits the Asset `sitekb://{config.name}/<alias>`.

| | |
|---|---|
| site file | `{path}` |
| schedule | {when} |
| approval before publishing | {'required' + (' (' + ', '.join(section.approval.approvers) + ')' if section.approval.approvers else '') if section.approval.required else 'no'} |
| freshness deadline | {f'{section.freshness_hours:g} h after a run is queued' if section.freshness_hours else 'none'} |
| notifiers | {notifiers} |
| snapshots kept | {config.keep_snapshots} |

**Params**: `full_recrawl`, `dry_run` (estimate only, publish nothing), `alias`, `start_url`, `rebuild` (no crawl:
the pages the newest crawl kept, judged by the config as it is now, as `sitekb rebuild` does).

**Golden questions** (asked of every new snapshot):
{golden}

A blocked run leaves the live snapshot untouched; the reasons are in the failed task's log, the run's note
and `sitekb snapshots list --site {config.name}`.
"""
