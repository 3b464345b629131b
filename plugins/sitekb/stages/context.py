"""The stage contract: ``run(ctx: RunContext) -> StageResult``.

A :class:`RunContext` carries everything a stage needs and nothing it must
look up itself: the run (id, the site config as resolved when it started, its
params, the embedder it chose), the settings the entry point resolved, the
database (an open connection, and the URL for a subprocess or a second
connection), and the embedder and tokenizer, built on first use from what the
run recorded. A stage reads its input from Postgres, writes its output to
Postgres and returns a :class:`StageResult`; the engine times it, stores the
result with the run and logs it. Every stage can run twice: it replaces its
own rows of the run in one transaction, or relies on content-addressed keys.

A finished run (succeeded, or blocked by the gate or an approver) takes no
more work: every registered stage of it returns the result it recorded and
touches nothing (:func:`finished`), so a task cleared in Airflow after the
run ended can neither rebuild, judge again, demote nor publish anything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from sitekb.errors import SitekbError
from sitekb.settings import Settings
from sitekb.sites import SiteConfig
from sitekb.store.runs import Run

# A run in one of these states is over: its stages and tasks do nothing when run again.
FINISHED = ("succeeded", "blocked")

if TYPE_CHECKING:
    from sitekb.embedding import EmbedderChoice
    from sitekb.providers.base import Embedder
    from sitekb.tokenization import Tokenizer


@dataclass
class RunContext:
    """What every stage of one run is given."""

    run: Run
    settings: Settings
    database_url: str
    conn: psycopg.Connection
    # Told (stage, done, total) as a long stage advances; a terminal draws it, a log needs nothing.
    progress: Callable[[str, int, int], None] | None = None

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def site(self) -> SiteConfig:
        return self.run.site

    @property
    def params(self) -> dict:
        return self.run.params

    @property
    def home(self) -> Path:
        return self.settings.home

    def finished(self) -> str | None:
        """Why the run takes no more work, as the database has it now (None: it may be worked on)."""
        from sitekb.store import runs

        return finished(runs.find(self.conn, self.run_id))

    def report(self, stage: str, done: int, total: int) -> None:
        """Tell whoever watches how far a long stage has come."""
        if self.progress is not None:
            self.progress(stage, done, total)

    @cached_property
    def choice(self) -> "EmbedderChoice":
        """The embedder the run chose when it started (a run started before runs recorded one: chosen now)."""
        from sitekb.embedding import EmbedderChoice, choose

        if not self.run.embedding:
            return choose(self.site.embedding, self.settings)
        return EmbedderChoice.from_dict(self.run.embedding)

    @cached_property
    def embedder(self) -> "Embedder":
        """The run's embedder (nothing loads or connects until it embeds)."""
        from sitekb.embedding import embedder_for_run

        return embedder_for_run(self.site.embedding, self.choice, self.settings)

    @cached_property
    def tokenizer(self) -> "Tokenizer":
        """The tokenizer of the run's embedding model, which every token count uses."""
        from sitekb.tokenization import get_tokenizer

        return get_tokenizer(self.choice.provider, self.choice.model)


@dataclass
class StageResult:
    """What a stage did.

    ``counts``: small values (numbers, names, flags) that XCom may carry and a
    run note may show; ``details``: larger facts (URLs by rule, per-check maps)
    stored with the run only; ``summary``: one sentence for the log.
    ``stop``: a verdict that ends the run after its record is stored (the
    quality gate's rejection). ``replayed``: the run was finished, the stage
    did nothing and these are the values it recorded when it ran.
    """

    counts: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    stop: SitekbError | None = None
    replayed: bool = False   # the run was finished: this is what the stage recorded then, and it did nothing now

    def record(self) -> dict[str, Any]:
        """What is stored with the run under its stage's name."""
        return {**self.counts, **self.details}


@dataclass(frozen=True)
class Stage:
    """One step of a refresh, as the registry lists it.

    ``run`` is the stage module's ``run`` behind the contract's one guard: for
    a finished run it returns what the stage recorded and does nothing
    (:func:`replay`), whichever driver calls it.
    """

    name: str
    run: Callable[[RunContext], StageResult]
    does: str                          # one line for people: what the stage does
    timeout_hours: float | None = None  # how long an orchestrator may let it run
    retry: bool = True                 # whether an orchestrator may retry it after a transient failure

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", _unless_finished(self.name, self.run))


def finished(run: Run | None) -> str | None:
    """Why ``run`` takes no more work (it succeeded, or was blocked), for a log line; None when it may."""
    if run is None or run.status not in FINISHED:
        return None
    if run.status == "succeeded":
        return (f"run {run.run_id} of {run.site.name!r} succeeded already and is left as it is; "
                "a new run refreshes the site")
    return (f"run {run.run_id} of {run.site.name!r} was blocked (its snapshot is not published) and is left as it "
            f"is; `sitekb run {run.site.name} --from STAGE --run {run.run_id}` takes it up again")


def replay(ctx: RunContext, name: str, why: str) -> StageResult:
    """What stage ``name`` of a finished run recorded, returned again; the run's rows are left as they are."""
    from sitekb.store import runs

    recorded = dict((runs.summary(ctx.conn, ctx.run_id)[0].get("stages") or {}).get(name) or {})
    recorded.pop("seconds", None)
    return StageResult(counts=recorded, summary=f"nothing to do: {why}", replayed=True)


def _unless_finished(name: str, body: Callable[[RunContext], StageResult]) -> Callable[[RunContext], StageResult]:
    if getattr(body, "__wrapped__", None) is not None:
        return body  # guarded already (a Stage copied with dataclasses.replace)

    @functools.wraps(body)
    def run(ctx: RunContext) -> StageResult:
        why = ctx.finished()
        return body(ctx) if why is None else replay(ctx, name, why)

    return run


def already_published(ctx: RunContext) -> StageResult | None:
    """A result that does nothing when the run's snapshot was published already (build and evaluate)."""
    from sitekb.store import snapshots

    snap = snapshots.for_run(ctx.conn, ctx.run_id)
    if snap is None or snap.state not in ("published", "retired"):
        return None
    return StageResult(counts={"snapshot_id": snap.snapshot_id, "skipped": snap.state},
                       summary=f"snapshot {snap.snapshot_id} is {snap.state} already and immutable: nothing to do")
