"""The publish stage: move the alias to the run's validated snapshot in one transaction, then tidy up.

The alias (the run's ``alias`` param, ``production`` by default) moves in one
row update, recorded in the alias history with who and why; a reader sees the
old snapshot or the new one, never a mix. Then retention drops the tables of
snapshots beyond ``keep_snapshots`` that no alias points to and nobody
pinned, the staged chunks of older runs go, and so do the documents of runs
no kept snapshot needs. The run succeeds.

Settings read: the site config's ``keep_snapshots``; the run's ``alias``, ``actor`` (and, after an
approval, ``reason`` and ``decision``).
"""

from __future__ import annotations

from sitekb.errors import SitekbError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.stages.context import RunContext, StageResult
from sitekb.store import chunks, documents, runs, snapshots


def run(ctx: RunContext) -> StageResult:
    from sitekb.quality.gate import prune_data_docs

    conn, site = ctx.conn, ctx.site
    alias = ctx.params.get("alias") or DEFAULT_ALIAS
    snap = snapshots.for_run(conn, ctx.run_id)
    if snap is None or snap.state not in ("validated", "published"):
        state = snap.state if snap else "missing"
        raise SitekbError(f"the snapshot of run {ctx.run_id} is {state}; only a validated snapshot is published")
    # A content owner's approval (the Airflow approval task) names who decided and why.
    previous = snapshots.publish(conn, snap.snapshot_id, alias, actor=ctx.params.get("actor"),
                                 reason=ctx.params.get("reason") or f"run {ctx.run_id}",
                                 decision=ctx.params.get("decision") or "moved")
    retired = snapshots.apply_retention(conn, site.name, site.keep_snapshots)
    runs.finish(conn, ctx.run_id, "succeeded")
    # Staging rows of older runs are no longer needed once a snapshot holds them.
    chunks.drop_older_runs(conn, site.name, ctx.run_id)
    dropped = documents.drop_unneeded(conn, site.name, ctx.run_id, site.keep_snapshots)
    docs_pruned = prune_data_docs(site, ctx.home, runs.worth_keeping(conn, site.name, site.keep_snapshots))
    return StageResult(
        counts={"snapshot_id": snap.snapshot_id, "alias": alias, "previous": previous,
                "old_documents_dropped": dropped, "data_docs_pruned": len(docs_pruned)},
        details={"retired": retired},
        summary=(f"{site.name}/{alias} -> snapshot {snap.snapshot_id} (was {previous or 'none'}); retention dropped "
                 f"{', '.join(map(str, retired)) or 'nothing'}; {dropped} documents of old runs dropped; "
                 f"Data Docs of {len(docs_pruned)} old runs deleted"),
    )
