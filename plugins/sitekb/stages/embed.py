"""The embed stage: every chunk text the cache lacks, embedded once, within the run's budget.

The cost is estimated before any request (the chunker counted the tokens with
the model's own tokenizer) and checked against ``embedding.budget_usd``; then
only the texts the content-addressed cache lacks are sent, and each request's
vectors are committed as soon as they return (:func:`sitekb.embedding.embed_run`).
A dry run stops after the estimate and embeds nothing.

Settings read: the site config's ``embedding`` section; the key and server of
an OpenAI-compatible provider through Settings.
"""

from __future__ import annotations

import logging

from sitekb.stages.context import RunContext, StageResult

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> StageResult:
    from sitekb.embedding import check_budget, embed_run, estimate_cost

    embedder = ctx.embedder
    budget = ctx.site.embedding.budget_usd
    estimate = estimate_cost(ctx.conn, ctx.run_id, embedder)
    log.info("embedding: %d new texts, %d tokens, estimated cost $%.4f at $%s/M tokens (%s:%s)%s",
             estimate["texts_to_embed"], estimate["tokens_to_embed"], estimate["estimated_usd"],
             estimate["price_per_million_usd"], embedder.provider, embedder.model,
             f", budget ${budget:.4f}" if budget is not None else "")
    identity = {"model": embedder.model, "dimensions": embedder.dimensions, "provider": embedder.provider}
    if ctx.params.get("dry_run"):
        return StageResult(counts={**identity, **estimate, "dry_run": True},
                           summary=f"dry run: {estimate['texts_to_embed']} texts would be embedded, "
                                   f"${estimate['estimated_usd']:.4f}")
    check_budget(estimate, budget)  # before any request
    result = embed_run(ctx.conn, ctx.run_id, embedder, batch_size=ctx.site.embedding.batch_size, budget_usd=budget,
                       progress=lambda done, total: ctx.report("embed", done, total))
    return StageResult(
        counts={"chunks": result.total, "reused": result.reused, "embedded": result.embedded,
                "requests": result.requests, **identity, "tokens_embedded": result.tokens,
                "spent_usd": round(result.usd, 6), "model_load_seconds": round(result.model_load_seconds, 3),
                "texts_per_second": result.texts_per_second,
                **{k: v for k, v in estimate.items() if k != "spent_usd"}},
        summary=(f"{result.embedded} texts embedded in {result.requests} requests, {result.reused} reused from the "
                 f"cache ({embedder.provider}:{embedder.model}, {embedder.dimensions} dimensions), "
                 f"${result.usd:.4f} spent"),
    )
