"""`sitekb audit`: every act, who did it and why, newest first, from one list (issue 15, roles)."""

from __future__ import annotations

import json

from sitekb.cli import main
from sitekb.store import approvals, audit, snapshots
from tests.db.factory import make_snapshot, random_pages


def test_the_audit_log_lists_who_published_rolled_back_rejected_approved_pinned_and_pruned(conn, capsys):
    a = make_snapshot(conn, "au", random_pages("au"), publish_as="production")
    b = make_snapshot(conn, "au", random_pages("au", seed=1), seed=1)
    c = make_snapshot(conn, "au", random_pages("au", seed=2), seed=2)
    assert main(["publish", str(b.snapshot_id), "--reason", "spring pricing"]) == 0
    assert main(["rollback", "--site", "au", "--reason", "wrong prices"]) == 0
    snapshots.reject(conn, c.snapshot_id, actor="maria@marketing", reason="old product name")
    approvals.record(conn, site="au", url="https://au.example/p1.html", content_hash="abc",
                     reason="the transcript is right", approved_by="lee@content", run_id="r1", failures=[])
    assert main(["snapshots", "pin", str(a.snapshot_id), "--reason", "keep for the audit"]) == 0
    assert main(["snapshots", "unpin", str(a.snapshot_id)]) == 0
    assert main(["snapshots", "prune", "--site", "au", "--keep", "1"]) == 0
    capsys.readouterr()

    assert main(["audit", "--site", "au", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    acts = [(r["action"], r["actor"], r["reason"]) for r in rows]
    actor = snapshots.current_actor()
    expected_newest_first = [
        ("pruned", actor, "kept the newest 1"),
        ("unpinned", actor, ""),
        ("pinned", actor, "keep for the audit"),
        ("approved page", "lee@content", "the transcript is right"),
        ("rejected", "maria@marketing", "old product name"),
        ("rolled back", actor, "wrong prices"),
        ("published", actor, "spring pricing"),
    ]
    assert acts[:7] == expected_newest_first
    assert ("published", "test", "factory") in acts                    # the factory's own publish, oldest
    by_action = {r["action"]: r for r in rows}
    assert by_action["rolled back"]["target"] == f"production: snapshot {b.snapshot_id} -> {a.snapshot_id}"
    assert by_action["rejected"]["target"].startswith(f"snapshot {c.snapshot_id} (alias production stayed at")
    assert by_action["pinned"]["target"] == f"snapshot {a.snapshot_id}"
    assert by_action["approved page"]["target"] == "https://au.example/p1.html"
    # One kind of act, and the plain listing a person reads.
    assert [r["action"] for r in audit.events(conn, site="au", action="rolled back")] == ["rolled back"]
    assert main(["audit", "--site", "au", "--action", "pinned"]) == 0
    out = capsys.readouterr().out
    assert "pinned" in out and f"snapshot {a.snapshot_id}" in out and "(keep for the audit)" in out
    assert "published" not in out


def test_a_rollback_still_undoes_a_rollback(conn):
    # Rollbacks are now told apart in the alias log; the second one still moves back again.
    a = make_snapshot(conn, "rb", random_pages("rb"), publish_as="production")
    b = make_snapshot(conn, "rb", random_pages("rb", seed=1), seed=1, publish_as="production")
    assert snapshots.rollback(conn, "rb") == (b.snapshot_id, a.snapshot_id)
    assert snapshots.rollback(conn, "rb") == (a.snapshot_id, b.snapshot_id)
    decisions = [r["decision"] for r in snapshots.history(conn, "rb")]
    assert decisions[:2] == ["rolled_back", "rolled_back"]


def test_nothing_recorded_says_so(conn, capsys):
    assert main(["audit", "--site", "nobody"]) == 0
    assert "nothing recorded for nobody" in capsys.readouterr().out


def test_a_run_that_changes_what_the_bot_may_know_is_listed_with_who_started_it(conn):
    from sitekb.sites import adhoc_site
    from sitekb.store import runs

    site = adhoc_site("https://rules.example/", name="rules")
    embedding = {"provider": "local", "model": "synthetic"}

    def start(run_id, config, actor, **params):
        runs.start(conn, config, run_id, {"actor": actor, **params}, embedding)
        runs.finish(conn, run_id, "succeeded")

    start("rules__1", site, "cron")
    start("rules__2", site, "cron")                                     # the same rules: nothing to list
    excluding = site.model_copy(update={"crawl": site.crawl.model_copy(update={"exclude_patterns": ["/drafts/"]})})
    start("rules__3", excluding, "ana@content", reason="keep drafts out")
    stricter = excluding.model_copy(update={"quality": excluding.quality.model_copy(update={"min_words": 120})})
    start("rules__dry", stricter, "bo", dry_run=True)                   # a dry run changes nothing live
    start("rules__4", stricter, "bo@ops")

    changed = [(r["actor"], r["reason"], r["target"]) for r in audit.events(conn, site="rules", action="changed rules")]
    assert changed == [("bo@ops", "", "run rules__4: quality"),
                       ("ana@content", "keep drafts out", "run rules__3: crawl.exclude_patterns")]
