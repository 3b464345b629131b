"""The build stage: a new immutable snapshot of the run's chunks, loaded in one statement, indexed after.

The snapshot records what the run chose and did: its embedder (provider,
model, dimensions, tokenizer, server, key variable, as the run recorded them
when it started), the site config hash and the extractor and chunker versions.
Only the chunks that changed since the site's newest snapshot are loaded, as a
delta segment; a first build writes a base segment, filled in one statement and
then indexed (:mod:`sitekb.store.snapshot_tables`, :mod:`sitekb.store.segments`).
Then its coverage is computed from the snapshot's rows and stored with it
(:mod:`sitekb.coverage`: chunks per section, tag, language and topic; a section
above the site's limit is a warning, never a rejection). A retry rebuilds an unpublished
snapshot; a published (or retired) one is never touched: the stage says so and
does nothing (a task cleared in Airflow after the run published).

Settings read: the site config's ``coverage.max_section_share``.
"""

from __future__ import annotations

from sitekb.stages.context import RunContext, StageResult, already_published
from sitekb.store import snapshot_tables, snapshots


def run(ctx: RunContext) -> StageResult:
    from sitekb import coverage
    from sitekb.chunking import CHUNKER_VERSION
    from sitekb.extract import EXTRACTOR_VERSION

    done = already_published(ctx)
    if done is not None:
        return done
    choice = ctx.choice
    with ctx.conn.transaction():
        snapshot_id = snapshots.create_record(
            ctx.conn, site=ctx.site.name, run_id=ctx.run_id, provider=choice.provider, model=choice.model,
            dimensions=choice.dimensions, tokenizer=choice.tokenizer, config_hash=ctx.site.config_hash(),
            extractor_version=EXTRACTOR_VERSION, chunker_version=CHUNKER_VERSION,
            # Queries must reach the server that embedded the chunks (sitekb.query).
            base_url=choice.base_url, api_key_env=choice.api_key_env,
        )
    counts = snapshot_tables.build(ctx.conn, snapshot_id, ctx.run_id, choice.model, choice.dimensions)
    made = "a new base segment"
    if counts["base_snapshot"] is not None:
        listed = f"{counts['segments']} segment" + ("s" if counts["segments"] != 1 else "")
        made = (f"a delta of {counts['delta_rows']} chunks and {counts['new_tombstones']} tombstoned on snapshot "
                f"{counts['base_snapshot']} ({listed})")
    covered = coverage.refresh(ctx.conn, snapshots.get(ctx.conn, snapshot_id), ctx.site.coverage.max_section_share)
    return StageResult(
        counts={"snapshot_id": snapshot_id, **counts, "coverage_warnings": len(covered["warnings"])},
        details={"coverage_warnings": covered["warnings"]},
        summary=(f"snapshot {snapshot_id}: {counts['chunks']} chunks of {counts['documents']} pages as {made}, "
                 f"loaded in {counts['load_seconds']:.2f}s, indexed in {counts['index_seconds']:.2f}s; coverage "
                 f"{coverage.headline(covered)}" + "".join(f"; WARNING {w}" for w in covered["warnings"])),
    )
