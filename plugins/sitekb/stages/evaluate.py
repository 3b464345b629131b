"""The evaluate stage: the batch gate and the golden questions, judged against the live snapshot.

The run's totals (pages, errors, documents, quarantine, chunks) go through the
``sitekb.batch`` suite against the live snapshot's; the golden questions are
asked of the new snapshot through the one query path (the same
``sitekb_api.search`` frontends call) and must not answer fewer than the live
snapshot does, within ``golden_tolerance``. The diff against the live snapshot
is stored with the new one. A failure rejects the snapshot, blocks the run and
stops it with every reason; the live snapshot stays. A snapshot published
already is not judged again (nor demoted): the stage does nothing.

Settings read: the site config's ``quality`` section, ``golden_questions``,
``golden_k``, ``golden_mode``, ``golden_tolerance``; the run's ``alias``.
"""

from __future__ import annotations

import hashlib
import json

import psycopg

from sitekb.errors import NotFound, QualityGateFailed, SitekbError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.quality.checks import Failure
from sitekb.settings import Settings
from sitekb.sites import SiteConfig
from sitekb.stages.context import RunContext, StageResult, already_published
from sitekb.store import documents, pages, runs, snapshot_tables, snapshots


def run(ctx: RunContext) -> StageResult:
    from sitekb.quality import gate

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
    golden = golden_score(conn, ctx.settings, site, snap) if site.golden_questions else None
    live_golden = live_golden_score(conn, ctx.settings, site, live) if (golden and live) else None
    if golden and live_golden and golden["hits"] < live_golden["hits"] - site.golden_tolerance:
        lost = sorted(set(golden["missed"]) - set(live_golden["missed"]))
        failures.append(Failure(
            "golden_questions", golden["hits"], live_golden["hits"] - site.golden_tolerance,
            f"answers {golden['hits']}/{golden['asked']} golden questions, live answers "
            f"{live_golden['hits']}; lost: {lost}",
        ))
    diff = snapshot_tables.diff(conn, live if live is not None and live.table_name else None, snap).summary()
    quality = {"totals": totals, "golden": golden, "live_golden": live_golden,
               "failures": [f.as_dict() for f in failures], "batch": batch,
               "documents": documents.summary(conn, ctx.run_id),
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
            + ". The live snapshot is unchanged. `sitekb snapshots list` shows it; fix the site or the "
            "thresholds in the site config's `quality` section and run again."
        )
        return StageResult(counts={**counts, "rejected": True}, details=details, stop=stop,
                           summary=f"snapshot {snap.snapshot_id} REJECTED: {'; '.join(details['failures'])}; "
                                   f"{golden_line}; {diff_line}")
    snapshots.set_state(conn, snap.snapshot_id, "validated", quality=quality, diff=diff, counts=totals)
    return StageResult(counts=counts, details=details,
                       summary=f"snapshot {snap.snapshot_id} passed the gate; {golden_line}; {diff_line}")


def golden_score(conn: psycopg.Connection, settings: Settings, site: SiteConfig, snap: snapshots.Snapshot) -> dict:
    """How many golden questions find their expected URL in the top-k of ``snap`` (published or not)."""
    from sitekb import query

    hits, lost = 0, []
    for golden in site.golden_questions:
        expected = site.absolute(golden.expected_url)
        result = query.search(conn, settings, golden.question, site=site.name, snapshot_id=snap.snapshot_id,
                              k=site.golden_k, mode=site.golden_mode, unpublished=True)
        if any(p.url == expected for p in result):
            hits += 1
        else:
            lost.append(golden.question)
    return {"asked": len(site.golden_questions), "hits": hits, "missed": lost, "k": site.golden_k,
            "questions_hash": _golden_hash(site)}


def live_golden_score(conn: psycopg.Connection, settings: Settings, site: SiteConfig,
                      live: snapshots.Snapshot) -> dict:
    """The live snapshot's golden score: stored at its own evaluation when the questions are the same."""
    stored = (live.quality or {}).get("golden") or {}
    if stored.get("questions_hash") == _golden_hash(site):
        return stored
    return golden_score(conn, settings, site, live)


def _golden_hash(site: SiteConfig) -> str:
    payload = json.dumps([g.model_dump() for g in site.golden_questions] + [site.golden_k, site.golden_mode],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
