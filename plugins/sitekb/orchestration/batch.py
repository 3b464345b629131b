"""The Batch API in Airflow: one mapped, deferrable task per shard of a run's missing texts.

Owns :class:`BatchEmbedShardOperator`. For a site with ``embedding.batch_api:
true`` the site DAG maps it over the shards the plan task returns::

    BatchEmbedShardOperator.partial(task_id="embed_shard", pool=..., sitekb_run=run).expand(shard=plan)

:meth:`~BatchEmbedShardOperator.execute` takes the shard's texts the cache
lacks, finds or submits their Batch job(s) (:mod:`sitekb.providers.openai_batch`:
at most ``JOB_INPUTS`` texts per job, each job keyed by its exact texts) and
defers to :class:`~sitekb.orchestration.triggers.BatchJobTrigger`, so the up
to 24 hours of waiting happen in the triggerer and hold no worker slot.
:meth:`~BatchEmbedShardOperator.execute_complete` reads the vectors, resends
the lines a job left undone through the synchronous endpoint (within the
budget), and stores everything in the cache with its spend in one
transaction. XCom carries small counts only.

Every attempt can run again: a retried task finds its jobs by their keys
(nothing is submitted or paid twice), collects at once if they are done, and
returns at once if the cache already holds the shard. A job that failed
validation, a refused key or a budget passed fail the task without retry; a
malformed output raises :class:`~sitekb.errors.TransientError` for Airflow's
retries.

Settings read: :func:`sitekb.orchestration.settings.task_settings`, and the
run's site config (``embedding.batch_poll_seconds``, ``timeout_seconds``,
``api_key_env``, ``budget_usd``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from sitekb.errors import BudgetExceeded, ConfigError
from sitekb.orchestration.tasks import run_context

if TYPE_CHECKING:
    from airflow.sdk import Context

    from sitekb.providers.openai_batch import BatchJob, JobOutput, OpenAIBatchEmbedder
    from sitekb.stages.context import RunContext

log = logging.getLogger(__name__)

# How long a deferred task waits: the job's 24 h window and a margin, and less than the window in which
# a job is found again by its key (openai_batch.FIND_WINDOW_SECONDS), so the retry after a timeout pays nothing.
WAIT_LIMIT = timedelta(hours=25)

_Todo = list[tuple[bytes, str, int]]  # (text_hash, embed_text, token_count), as the cache lists them


class BatchEmbedShardOperator(BaseOperator):
    """Embed shard ``[i, n]`` of run ``sitekb_run``'s missing texts through OpenAI's Batch API, deferred while it runs.

    :param sitekb_run: the sitekb run id (templated; an XComArg of the start task).
    :param shard: ``[i, n]``: part ``i`` of ``n`` of the missing texts
        (templated; mapped over the plan task's list). ``None``: all of them.
    """

    template_fields: Sequence[str] = ("sitekb_run", "shard")
    ui_color = "#e8f0fe"

    def __init__(self, *, sitekb_run: str, shard: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Not `run_id`: that name is the Airflow run's own in a task's context.
        self.sitekb_run = sitekb_run
        self.shard = shard

    def execute(self, context: Context) -> dict:
        from sitekb.embedding import check_input_lengths
        from sitekb.orchestration.triggers import BatchJobTrigger

        with run_context(self.sitekb_run) as ctx:
            embedder = _batch_embedder(ctx)
            todo = self._todo(ctx, embedder)
            if not todo:
                log.info("sitekb %s: run %s, %s: the cache holds every text; no batch job", ctx.site.name,
                         self.sitekb_run, self._name())
                return self._counts(jobs=0)
            check_input_lengths(todo, embedder, self.sitekb_run)
            groups = _groups(embedder, todo)
            jobs = embedder.find_jobs(list(groups))
            new = {key: group for key, group in groups.items() if key not in jobs}
            if new:
                _check_budget(ctx, embedder, [row for group in new.values() for row in group])
            for key, group in groups.items():
                if key in jobs:
                    log.info("sitekb %s: %s: OpenAI batch %s (%s) holds %d of its texts already: taken up",
                             ctx.site.name, self._name(), jobs[key].batch_id, jobs[key].status, len(group))
                else:
                    jobs[key] = embedder.new_job([t for _, t, _ in group], [c for _, _, c in group])
            jobs_in_order = [jobs[key] for key in groups]
            log.info("sitekb %s: run %s, %s: %d texts in %d batch job(s) (%d submitted now): %s", ctx.site.name,
                     self.sitekb_run, self._name(), len(todo), len(groups), len(new),
                     ", ".join(f"{j.batch_id} {j.status}" for j in jobs_in_order))
            if all(job.done for job in jobs_in_order):  # a retry after the jobs finished: nothing to wait for
                return self._store(ctx, embedder, todo, jobs_in_order)
            emb = ctx.site.embedding
            trigger = BatchJobTrigger(
                [job.batch_id for job in jobs_in_order], base_url=embedder.base_url,
                api_key_env=ctx.choice.api_key_env or emb.api_key_env, poll_seconds=emb.batch_poll_seconds,
                timeout_seconds=emb.timeout_seconds,
            )
        log.info("sitekb: %s defers to the triggerer until its batch job(s) are done (polling every %gs)",
                 self._name(), trigger.poll_seconds)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=WAIT_LIMIT)

    def execute_complete(self, context: Context, event: dict | None = None) -> dict:
        """Resumed by the trigger's event: collect the vectors and store them with their spend."""
        from sitekb.providers.openai_batch import BatchJob

        event = event or {}
        if event.get("status") != "done":
            # A job that failed validation, or jobs that cannot be watched (key refused, job unknown).
            raise AirflowFailException(event.get("message") or f"the batch trigger sent no result: {event!r}")
        jobs = [BatchJob.from_dict(job) for job in event["jobs"]]
        with run_context(self.sitekb_run) as ctx:
            embedder = _batch_embedder(ctx)
            return self._store(ctx, embedder, self._todo(ctx, embedder), jobs)

    # -- steps ------------------------------------------------------------------

    def _store(self, ctx: RunContext, embedder: OpenAIBatchEmbedder, todo: _Todo, jobs: list[BatchJob]) -> dict:
        """Collect the jobs, resend their undone lines within the budget, store it all in one transaction."""
        import numpy as np

        from sitekb.embedding import text_hash
        from sitekb.store import embeddings as cache

        groups = _groups(embedder, todo)
        outputs: list[JobOutput] = []
        for job in jobs:
            group = groups.get(job.key)  # else the texts are read back from the job's input file
            outputs.append(embedder.collect(job, [t for _, t, _ in group] if group else None,
                                            [c for _, _, c in group] if group else None))
        batch_usd = sum(o.tokens for o in outputs) * embedder.price_per_million / 1_000_000
        resend_tokens = sum(embedder.missing_tokens(o) for o in outputs)
        resend_requests = sum(len(o.missing) for o in outputs)
        over_budget = None
        if resend_requests:
            over_budget = _resend_over_budget(ctx, embedder, batch_usd, resend_tokens)
            if over_budget is None:
                for output in outputs:
                    embedder.resend(output)
            else:
                resend_requests = 0
        hashes = [text_hash(text) for o in outputs for text, done in zip(o.texts, o.done_rows) if done]
        tokens = sum(o.tokens + o.resent_tokens for o in outputs)
        usd = batch_usd + sum(o.resent_tokens for o in outputs) * embedder.sync_price_per_million / 1_000_000
        if hashes:
            vectors = np.vstack([o.vectors[o.done_rows] for o in outputs])
            # One write for every job of the shard: a retry sees all of them stored or none.
            cache.store_vectors(ctx.conn, embedder.model, embedder.dimensions, hashes, vectors,
                                spend=cache.Spend(self.sitekb_run, embedder.provider, tokens, usd))
        resent = sum(o.resent for o in outputs)
        log.info("sitekb %s: run %s, %s: %d texts from %d batch job(s) stored (%d resent synchronously), "
                 "%d tokens, $%.4f", ctx.site.name, self.sitekb_run, self._name(), len(hashes), len(jobs), resent,
                 tokens, usd)
        if over_budget is not None:
            raise over_budget  # after storing what was paid for
        return self._counts(jobs=len(jobs), embedded=len(hashes), resent=resent,
                            requests=len(jobs) + resend_requests, tokens=tokens,
                            spent_usd=round(usd, 6))

    def _todo(self, ctx: RunContext, embedder: OpenAIBatchEmbedder) -> _Todo:
        from sitekb.store import embeddings as cache

        return cache.missing_texts(ctx.conn, self.sitekb_run, embedder.model, embedder.dimensions, shard=self._shard())

    def _shard(self) -> tuple[int, int] | None:
        if self.shard is None:
            return None
        index, count = (int(part) for part in self.shard)
        return index, count

    def _name(self) -> str:
        shard = self._shard()
        return "all texts" if shard is None else f"shard {shard[0] + 1}/{shard[1]}"

    def _counts(self, *, jobs: int, embedded: int = 0, resent: int = 0, requests: int = 0, tokens: int = 0,
                spent_usd: float = 0.0) -> dict:
        index, count = self._shard() or (None, None)
        return {"shard": index, "of": count, "jobs": jobs, "embedded": embedded, "resent": resent,
                "requests": requests, "tokens": tokens, "spent_usd": spent_usd}


def _batch_embedder(ctx: RunContext) -> OpenAIBatchEmbedder:
    from sitekb.providers.openai_batch import OpenAIBatchEmbedder

    embedder = ctx.embedder
    if not isinstance(embedder, OpenAIBatchEmbedder):
        raise ConfigError(
            f"run {ctx.run_id} embeds with {embedder.provider}:{embedder.model}, not through OpenAI's Batch API: "
            "the batch embed task needs embedding.provider: openai and embedding.batch_api: true in the site config"
        )
    return embedder


def _groups(embedder: OpenAIBatchEmbedder, todo: _Todo) -> dict[str, _Todo]:
    """The texts of each job, by job key, in job order (at most ``JOB_INPUTS`` texts each)."""
    groups = (todo[part.start : part.stop] for part in embedder.job_ranges(len(todo)))
    return {embedder.job_key([t for _, t, _ in group]): group for group in groups}


def _check_budget(ctx: RunContext, embedder: OpenAIBatchEmbedder, todo: _Todo) -> None:
    """Before submitting: the run's spend so far plus these texts at the batch price must fit the budget."""
    from sitekb.embedding import check_budget
    from sitekb.store import embeddings as cache

    budget = ctx.site.embedding.budget_usd
    if budget is None:
        return
    tokens = sum(count for _, _, count in todo)
    check_budget({"texts_to_embed": len(todo), "tokens_to_embed": tokens,
                  "estimated_usd": round(tokens * embedder.price_per_million / 1_000_000, 6),
                  "spent_usd": cache.run_spend(ctx.conn, ctx.run_id)["usd"]}, budget)


def _resend_over_budget(ctx: RunContext, embedder: OpenAIBatchEmbedder, batch_usd: float,
                        resend_tokens: int) -> BudgetExceeded | None:
    """Why the undone lines may not be resent at the synchronous price (None: they may)."""
    from sitekb.store import embeddings as cache

    budget = ctx.site.embedding.budget_usd
    if budget is None:
        return None
    spent = cache.run_spend(ctx.conn, ctx.run_id)["usd"] + batch_usd
    resend_usd = resend_tokens * embedder.sync_price_per_million / 1_000_000
    if spent + resend_usd <= budget + 1e-9:
        return None
    return BudgetExceeded(
        f"the batch jobs of run {ctx.run_id} left {resend_tokens} tokens undone; resending them at the synchronous "
        f"price (${resend_usd:.4f}) would take the run past its embedding budget of ${budget:.4f} (spent "
        f"${spent:.4f}). What the jobs embedded is stored; raise embedding.budget_usd and clear the task."
    )
