"""The chunk stage: accepted documents into structure- and token-aware chunks, then the chunk suite.

Chunks are counted with the run's embedding model's own tokenizer and never
pass its input limit, whatever the site asks (:mod:`sitekb.chunking`); every
chunk knows its heading path. The ``sitekb.chunks`` suite then quarantines a
document with nothing to embed or a chunk over the limit (a rerun of the stage
first takes back what it quarantined before, so a raised limit lets those
documents through), and the full-text
vectors of content never indexed before are computed and cached
(:mod:`sitekb.store.fulltext`).

A document whose URL, title and text an earlier run (the newest whose chunks
are still staged: the live snapshot's run, or one after it) cut with the same
inputs (chunker version, tokenizer, chunking settings:
:func:`sitekb.chunking.chunk_inputs`) keeps that run's chunks, copied in the
database: a refresh with 1% of the documents changed cuts 1% of them.

Settings read: the site config's ``chunking`` section.
"""

from __future__ import annotations

from sitekb.errors import ConfigError
from sitekb.stages.context import RunContext, StageResult
from sitekb.store import chunks, documents, fulltext


def run(ctx: RunContext) -> StageResult:
    from sitekb.chunking import CHUNKER_VERSION, chunk_document, chunk_inputs
    from sitekb.embedding import text_hash
    from sitekb.quality import gate

    config = chunking_config(ctx)
    tokenizer = ctx.tokenizer
    # A rerun of this stage judges the documents again: what it quarantined last time comes back first.
    taken_back = documents.undo_chunk_quarantine(ctx.conn, ctx.run_id)
    docs = documents.accepted(ctx.conn, ctx.run_id)
    # Documents an earlier run cut with the same inputs from the same title and text keep its chunks.
    inputs = chunk_inputs(tokenizer.name, config)
    source, reused = chunks.reusable(ctx.conn, ctx.site.name, ctx.run_id, inputs)
    skip = set(reused)

    def rows():
        seen: set[str] = set()
        for doc in docs:
            if doc["url"] in skip:
                continue
            for chunk in chunk_document(doc["markdown"], url=doc["url"], title=doc["title"], tokenizer=tokenizer,
                                        config=config):
                if chunk.chunk_id in seen:
                    continue  # identical chunk twice in one run: keep one
                seen.add(chunk.chunk_id)
                yield (chunk.chunk_id, doc["url"], chunk.seq, chunk.heading_path, chunk.text, chunk.embed_text,
                       text_hash(chunk.embed_text), chunk.token_count)

    chunks.replace_run(ctx.conn, ctx.run_id, ctx.site.name, rows(), copy_from=(source, reused) if source else None)
    # The documents that kept an earlier run's chunks passed this suite there, with the same limit.
    checked = gate.check_chunks(ctx.conn, ctx.run_id, config.max_tokens,
                                gate.data_docs_dir(ctx.site, ctx.run_id, ctx.home), passed_before=reused)
    count, tokens = chunks.totals(ctx.conn, ctx.run_id)
    indexed = fulltext.index_run(ctx.conn, ctx.run_id)
    late = checked.pop("quarantined_after_chunking")
    return StageResult(
        counts={"documents": len(docs), "chunks": count, "tokens": tokens, "chunker_version": CHUNKER_VERSION,
                "chunk_inputs": inputs, "reused_documents": len(reused), "reused_from": source,
                "tokenizer": tokenizer.name, "max_tokens": config.max_tokens, "taken_back": taken_back,
                **checked, **indexed},
        details={"quarantined_after_chunking": late},
        summary=(f"{count} chunks, {tokens} tokens ({tokenizer.name}, at most {config.max_tokens} a chunk) from "
                 f"{len(docs)} documents ({len(reused)} unchanged, their chunks reused); the chunk suite judged "
                 f"{checked['chunk_suite_judged']} and quarantined {len(late)}; full-text vectors "
                 f"{indexed['fulltext_computed']} computed, {indexed['fulltext_reused']} reused"),
    )


def chunking_config(ctx: RunContext):
    """The site's chunking settings fitted to the run's embedding model."""
    from sitekb.chunking import ChunkingConfig

    cfg = ctx.site.chunking
    limit = ctx.choice.max_tokens
    # Never above the model's input limit, whatever the site asks; a target above it shrinks with it.
    max_tokens = min(cfg.max_tokens or limit, limit)
    target = min(cfg.target_tokens, max_tokens)
    try:
        return ChunkingConfig(target_tokens=target, max_tokens=max_tokens, template=cfg.template,
                              overlap_tokens=min(cfg.overlap_tokens, target - 1))
    except ValueError as exc:
        raise ConfigError(f"site config `chunking` does not fit {ctx.choice.model}: {exc}") from exc
