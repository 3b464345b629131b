"""The evaluate stage: the batch gate and the golden questions, judged against the live snapshot.

The run's totals (pages, errors, documents, quarantine, chunks) go through the
``sitekb.batch`` suite against the live snapshot's; the golden questions
(:mod:`sitekb.quality.golden`) must each name a page of the new snapshot, are
asked of it through the one query path (the same ``sitekb_api.search``
frontends call), and must find their page for at least ``golden_min_share`` of
them and for no fewer than the live snapshot does, within
``golden_tolerance``. The diff against the live snapshot
is stored with the new one. A failure rejects the snapshot, blocks the run and
stops it with every reason; the live snapshot stays. A snapshot published
already is not judged again (nor demoted): the stage does nothing.

Settings read: the site config's ``quality`` section, ``golden_questions``,
``golden_k``, ``golden_mode``, ``golden_tolerance``, ``golden_min_share``, ``messaging``; the run's ``alias``.
"""

from __future__ import annotations

from sitekb.errors import NotFound, QualityGateFailed, SitekbError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.stages.context import RunContext, StageResult, already_published
from sitekb.store import documents, pages, runs, snapshot_tables, snapshots


def run(ctx: RunContext) -> StageResult:
    from sitekb.quality import gate
    from sitekb.quality import golden as golden_questions

    done = already_published(ctx)
    if done is not None:
        return done
    conn, site = ctx.conn, ctx.site
    snap = snapshots.for_run(conn, ctx.run_id)
    if snap is None or snap.table_name is None:
        raise SitekbError(f"run {ctx.run_id} has no built snapshot; run the build stage first")
    try:
        live = snapshots.resolve(conn, site.name, ctx.params.get("alias") or DEFAULT_ALIAS)
    except NotFound:
        live = None
    totals = {**pages.run_totals(conn, site.name, ctx.run_id), **documents.counts(conn, ctx.run_id), **snap.counts}
    docs_dir = gate.data_docs_dir(site, ctx.run_id, ctx.home)
    failures, batch = gate.judge_batch(totals, live.counts if live else None, site, ctx.run_id, docs_dir)
    golden = live_golden = None
    if site.golden_questions:
        unmatched = golden_questions.check_pages(conn, site, snap, ctx.run_id)
        golden = golden_questions.score(conn, ctx.settings, site, snap, unmatched)
        live_golden = golden_questions.live_score(conn, ctx.settings, site, live) if live else None
        failures.extend(golden_questions.judge(golden, live_golden, site))
    # Retired terms and claims (site config `messaging`): findings kept with the snapshot; a `block` rule rejects it.
    blocked_wording, messaging = gate.judge_messaging(conn, site, snap)
    failures.extend(blocked_wording)
    diff = snapshot_tables.diff(conn, live if live is not None and live.table_name else None, snap).summary()
    quality = {"totals": totals, "golden": golden, "live_golden": live_golden,
               "failures": [f.as_dict() for f in failures], "batch": batch,
               "documents": documents.summary(conn, ctx.run_id), "messaging": messaging,
               "data_docs": str(docs_dir / "index.html") if docs_dir else None}
    diff_counts = {k: (len(v) if isinstance(v, list) else v) for k, v in diff.items()}
    counts = {"snapshot_id": snap.snapshot_id, "verdict": "rejected" if failures else "passed",
              "golden_hits": golden["hits"] if golden else None, "golden_asked": golden["asked"] if golden else None}
    details = {"failures": [f.message for f in failures], "golden": golden, "diff": diff_counts}
    diff_line = (f"diff vs live +{diff_counts['added']} pages, -{diff_counts['removed']}, "
                 f"~{diff_counts['changed']} changed")
    golden_line = f"golden {golden['hits']}/{golden['asked']}" if golden else "no golden questions"
    if failures:
        snapshots.set_state(conn, snap.snapshot_id, "rejected", reasons=quality["failures"], quality=quality,
                            diff=diff, counts=totals)
        runs.finish(conn, ctx.run_id, "blocked", "; ".join(f"{f.check}: {f.message}" for f in failures))
        stop = QualityGateFailed(
            f"snapshot {snap.snapshot_id} of {site.name!r} was rejected and not published: "
            + "; ".join(f"{f.check}: {f.message}" for f in failures)
            + ". The live snapshot is unchanged. `sitekb snapshots list` shows it; " + _what_to_do(failures)
        )
        return StageResult(counts={**counts, "rejected": True}, details=details, stop=stop,
                           summary=f"snapshot {snap.snapshot_id} REJECTED: {'; '.join(details['failures'])}; "
                                   f"{golden_line}; {diff_line}")
    snapshots.set_state(conn, snap.snapshot_id, "validated", quality=quality, diff=diff, counts=totals)
    return StageResult(counts=counts, details=details,
                       summary=f"snapshot {snap.snapshot_id} passed the gate; {golden_line}; {diff_line}")


def _what_to_do(failures) -> str:
    """The advice that ends a rejection: a retired term is fixed on the site, a threshold in the config."""
    if all(f.check == "messaging" for f in failures):
        return "the messaging rule's message above says what to change."
    return "fix the site or the thresholds in the site config's `quality` section and run again."
