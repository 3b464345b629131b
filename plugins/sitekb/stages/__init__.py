"""The stages of a refresh and their one registry.

crawl → extract → validate → chunk → embed → build → evaluate → publish

Every stage is a module with one function, ``run(ctx: RunContext) ->
StageResult`` (:mod:`sitekb.stages.context`). :data:`STAGES` is the only list
of them: the local engine (``sitekb run``, :mod:`sitekb.engine`), the Airflow
tasks (:mod:`sitekb.orchestration`), the dry run and a partial rerun
(``sitekb run SITE --from STAGE``) all drive it. To add a stage, write its
module and put it in :data:`STAGES` where it belongs; every driver picks it up.

A rebuild (``sitekb rebuild SITE``) is a run of the same stages whose params
name a source run (``rebuild_of``): its crawl stage sends no request and takes
up the pages that run kept (:mod:`sitekb.restage`), so no driver plans it apart.

Stage modules import heavy libraries inside ``run`` only, so that a DAG file
can import the registry at parse time.
"""

from __future__ import annotations

from sitekb.errors import ConfigError
from sitekb.stages import build, chunk, crawl, embed, evaluate, extract, publish, validate
from sitekb.stages.context import RunContext, Stage, StageResult

STAGES: tuple[Stage, ...] = (
    Stage("crawl", crawl.run, "fetch the site's pages politely, honouring every opt-out (a rebuild: take up the "
          "stored ones, judged by the current config)", timeout_hours=6),
    Stage("extract", extract.run, "turn each kept page into a markdown document with its metadata"),
    Stage("validate", validate.run, "accept or quarantine each document by the quality checks"),
    Stage("chunk", chunk.run, "cut accepted documents into token-counted chunks with heading paths"),
    Stage("embed", embed.run, "embed the chunk texts the cache lacks, within the budget", timeout_hours=6),
    Stage("build", build.run, "load the chunks and vectors into a new snapshot and index it"),
    Stage("evaluate", evaluate.run, "judge the snapshot: batch checks, golden questions, diff", retry=False),
    Stage("publish", publish.run, "move the alias to the snapshot and apply retention"),
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# What a dry run executes: everything up to the cost estimate (the embed stage embeds nothing then).
DRY_RUN: tuple[str, ...] = NAMES[: NAMES.index("embed") + 1]


def get(name: str) -> Stage:
    """The stage called ``name``."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage {name!r}: the stages are {', '.join(NAMES)}")


def starting_at(name: str) -> tuple[Stage, ...]:
    """``name`` and every stage after it."""
    return STAGES[NAMES.index(get(name).name):]


__all__ = ["DRY_RUN", "NAMES", "STAGES", "RunContext", "Stage", "StageResult", "get", "starting_at"]
