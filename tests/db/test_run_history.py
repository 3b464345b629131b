"""Run history is bounded: run rows and their per-run ledgers past ``history_runs`` go, unless still needed.

Without the bound, every refresh adds a run row, crawl statistics, up to
1000 exclusions per rule and its fetch failures, forever.
"""

from __future__ import annotations

import json

from sitekb import engine
from sitekb.store import ledger, runs, snapshots
from sitekb.store.ledger import Exclusion, FetchFailure
from tests.db.factory import make_snapshot, random_pages


def _finished_run(conn, settings, site, run_id, *, full=False, status="succeeded"):
    engine.start(conn, settings, site, run_id, {})
    with conn.transaction(), conn.cursor() as cur:
        ledger.add_exclusions(cur, site.name, run_id, [Exclusion(f"https://x.example/{run_id}/{i}", "robots")
                                                       for i in range(5)])
        ledger.add_failures(cur, site.name, run_id, [FetchFailure(f"https://x.example/{run_id}/f", "timeout")])
    ledger.record_crawl(conn, site.name, run_id, {"full": full, "fetched": 1})
    conn.execute("""INSERT INTO sitekb.embedding_spend (run_id, provider, model, dimensions)
                    VALUES (%s, 'local', 'm', 8)""", (run_id,))
    runs.finish(conn, run_id, status)


def _count(conn, table, run_id):
    return conn.execute(f"SELECT count(*) FROM sitekb.{table} WHERE run_id = %s", (run_id,)).fetchone()[0]


def test_a_run_start_trims_the_history_of_old_runs_and_keeps_what_is_still_needed(conn, settings, demo_config):
    site = demo_config.model_copy(update={"history_runs": 3})
    _finished_run(conn, settings, site, "r01", full=True)         # an old full crawl, superseded below
    _finished_run(conn, settings, site, "r02", full=True)         # the newest full crawl: kept
    for n in range(3, 9):
        _finished_run(conn, settings, site, f"r{n:02d}", status="failed" if n % 2 else "succeeded")
    # An old run's snapshot is live (a rollback target or simply never replaced): that run is kept.
    live = make_snapshot(conn, site.name, random_pages(site.name), publish_as="production")
    pinned = make_snapshot(conn, site.name, random_pages(site.name, seed=2), seed=2)
    snapshots.set_pinned(conn, pinned.snapshot_id, True)
    # An old run whose snapshot table retention dropped: its record goes with the run.
    gone = make_snapshot(conn, site.name, random_pages(site.name, seed=3), seed=3, state="rejected")
    conn.execute("UPDATE sitekb.snapshots SET table_name = NULL WHERE snapshot_id = %s", (gone.snapshot_id,))
    for run_id in (live.run_id, pinned.run_id, gone.run_id):   # the factory stages snapshots without a run row
        conn.execute("""INSERT INTO sitekb.runs (run_id, site, status, started_at, finished_at)
                        VALUES (%s, %s, 'succeeded', now() - interval '2 days', now() - interval '2 days')""",
                     (run_id, site.name))
    for run_id in (live.run_id, pinned.run_id, gone.run_id):
        conn.execute("DELETE FROM sitekb.documents WHERE run_id = %s", (run_id,))   # documents dropped already
    events = conn.execute("SELECT count(*) FROM sitekb.alias_events").fetchone()[0]

    engine.start(conn, settings, site, "r09", {})

    remaining = {r[0] for r in conn.execute("SELECT run_id FROM sitekb.runs WHERE site = %s", (site.name,))}
    # The newest three before this start, this run, the newest full crawl, the live and the pinned snapshot's runs.
    assert remaining == {"r06", "r07", "r08", "r09", "r02", live.run_id, pinned.run_id}
    for run_id in ("r01", "r03", "r04", "r05"):
        for table in ("exclusions", "fetch_failures", "crawl_stats", "embedding_spend"):
            assert _count(conn, table, run_id) == 0, (table, run_id)
    for run_id in ("r02", "r06", "r07", "r08"):
        assert _count(conn, "exclusions", run_id) == 5 and _count(conn, "crawl_stats", run_id) == 1
    assert ledger.last_full_crawl(conn, site.name) is not None
    assert conn.execute("SELECT count(*) FROM sitekb.snapshots WHERE snapshot_id = %s",
                        (gone.snapshot_id,)).fetchone()[0] == 0
    assert snapshots.resolve(conn, site.name).snapshot_id == live.snapshot_id
    assert snapshots.get(conn, pinned.snapshot_id).pinned
    # The audit trail of alias moves is never trimmed.
    assert conn.execute("SELECT count(*) FROM sitekb.alias_events").fetchone()[0] == events


def test_history_stays_bounded_over_many_runs(conn, settings, demo_config):
    site = demo_config.model_copy(update={"history_runs": 4})
    for n in range(30):
        _finished_run(conn, settings, site, f"many{n:02d}", status="failed")
    counts = {table: conn.execute(f"SELECT count(*) FROM sitekb.{table} WHERE site = %s", (site.name,)).fetchone()[0]
              for table in ("runs", "exclusions", "fetch_failures", "crawl_stats")}
    assert counts == {"runs": 5, "exclusions": 25, "fetch_failures": 5, "crawl_stats": 5}, json.dumps(counts)


def test_history_runs_does_not_change_what_a_site_knows(demo_config):
    assert demo_config.model_copy(update={"history_runs": 7}).config_hash() == demo_config.config_hash()
