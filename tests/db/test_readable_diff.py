"""`sitekb snapshots diff` for a person: per changed page its sections and a text diff, per removed page why.

Two synthetic snapshots (tests/db/factory.py) through the real build; the
newer run's ledgers are written where the crawler writes them (an exclusion
row, a page row answering 404), so the reasons come from the same queries a
real run's would.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sitekb import diffs
from sitekb.cli import main
from tests.db.factory import Page, make_snapshot

SITE = "rd"
URL = f"https://{SITE}.example"


def _two_snapshots(conn):
    pricing_before = Page(f"{URL}/pricing.html", "Pricing", ["Starter costs 10 dollars a month.", "Contact sales."],
                          headings=["Plans"])
    pricing_after = Page(f"{URL}/pricing.html", "Pricing", ["Starter costs 12 dollars a month.", "Contact sales."],
                         headings=["Plans"])
    keep = Page(f"{URL}/about.html", "About", ["We make forms."])
    old = make_snapshot(conn, SITE, [pricing_before, keep,
                                     Page(f"{URL}/webinar.html", "Webinar", ["Transcript of the webinar."]),
                                     Page(f"{URL}/launch.html", "Launch", ["We launched in May."]),
                                     Page(f"{URL}/orphan.html", "Orphan", ["Nobody links here now."])],
                        publish_as="production")
    new = make_snapshot(conn, SITE, [pricing_after, keep], seed=1)
    # What the newer run's crawl recorded: the webinar page marked for no training, the launch page gone.
    conn.execute("INSERT INTO sitekb.exclusions (site, url, rule, detail, run_id) VALUES (%s, %s, %s, %s, %s)",
                 (SITE, f"{URL}/webinar.html", "label", "#do_NOT_train_on_this", new.run_id))
    conn.execute(
        """INSERT INTO sitekb.pages (site, url, status, fetched_at, first_run_id, last_run_id)
           VALUES (%s, %s, 404, %s, %s, %s)""",
        (SITE, f"{URL}/launch.html", datetime.now(timezone.utc), old.run_id, new.run_id))
    return old, new


def test_a_changed_page_shows_its_section_and_the_changed_line_and_removed_pages_say_why(conn):
    old, new = _two_snapshots(conn)
    result = diffs.readable(conn, old, new)

    change = result.changes[f"{URL}/pricing.html"]
    assert change.headings == ["Plans"]
    assert "-Starter costs 10 dollars a month." in change.lines
    assert "+Starter costs 12 dollars a month." in change.lines
    assert " Contact sales." in change.lines          # one line of context by default
    assert result.removals == {
        f"{URL}/launch.html": {"kind": "not-found", "reason": "page not found (404)"},
        f"{URL}/orphan.html": {"kind": "removed",
                               "reason": "no longer found on the site (no link or sitemap entry leads to it)"},
        f"{URL}/webinar.html": {"kind": "opt-out", "reason": "marked #do_NOT_train_on_this"},
    }


def test_the_diff_lines_are_capped_per_page_and_the_cap_is_said(conn):
    old = make_snapshot(conn, SITE, [Page(f"{URL}/faq.html", "FAQ", [f"Question {i} answer A." for i in range(9)])])
    new = make_snapshot(conn, SITE, [Page(f"{URL}/faq.html", "FAQ", [f"Question {i} answer B." for i in range(9)])],
                        seed=1)
    capped = diffs.readable(conn, old, new, context=0, max_lines=4).changes[f"{URL}/faq.html"]
    assert len(capped.lines) == 4 and capped.more_lines == 14
    whole = diffs.readable(conn, old, new, context=0, max_lines=0).changes[f"{URL}/faq.html"]
    assert len(whole.lines) == 18 and whole.more_lines == 0


def test_cli_prints_sections_text_and_reasons_and_json_carries_them(conn, database_url, capsys, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    old, new = _two_snapshots(conn)

    assert main(["snapshots", "diff", str(old.snapshot_id), str(new.snapshot_id)]) == 0
    text = capsys.readouterr().out
    assert "~ Pricing  https://rd.example/pricing.html" in text
    assert "sections: Plans" in text
    assert "-Starter costs 10 dollars a month." in text and "+Starter costs 12 dollars a month." in text
    assert "- Webinar  https://rd.example/webinar.html  (1 chunks)\n      why: marked #do_NOT_train_on_this" in text
    assert "why: page not found (404)" in text

    assert main(["snapshots", "diff", str(old.snapshot_id), str(new.snapshot_id), "--no-text"]) == 0
    assert "+Starter costs 12" not in capsys.readouterr().out

    assert main(["snapshots", "diff", str(old.snapshot_id), str(new.snapshot_id), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    [changed] = payload["changed"]
    assert changed["headings"] == ["Plans"] and "+Starter costs 12 dollars a month." in changed["text_diff"]
    removed = {p["url"]: p for p in payload["removed"]}
    assert removed[f"{URL}/webinar.html"]["kind"] == "opt-out"
    assert removed[f"{URL}/launch.html"]["reason"] == "page not found (404)"

    assert main(["snapshots", "diff", str(old.snapshot_id), str(new.snapshot_id), "--context", "-1"]) != 0
    assert "--context and --max-lines" in capsys.readouterr().err
