"""Messaging pivots on a real run: a retired term planted in two pages of a copy of the demo site, served on
127.0.0.1, crawled, embedded by the fake OpenAI server (hashed words, no model), built, judged, published.

One database for the module, one run per policy: ``report`` publishes and names the pages and chunks
(snapshot record, `sitekb messaging`, run summary); ``block`` rejects the snapshot and the live one stays;
``quarantine`` holds both pages back, and an approval lets them through.
"""

from __future__ import annotations

import json
import shutil

import pytest

from sitekb import engine, report, store
from sitekb.cli import main
from sitekb.demo.server import SITE_DIR, DemoSite
from sitekb.errors import QualityGateFailed
from sitekb.settings import Settings
from sitekb.sites import MessagingConfig, MessagingRule, load_site
from sitekb.store import snapshot_tables, snapshots
from tests.fake_openai import FakeOpenAI, embedding_through, use_environment

CHURN, EVENTS = "/articles/churn-signals.html", "/articles/event-roi.html"
RULE = "Acme Cloud"


def plant(site_dir) -> None:
    """The retired term in two articles: once across a line break, twice (once half in bold) in the other."""
    churn = site_dir / CHURN.lstrip("/")
    text = churn.read_text(encoding="utf-8")
    sentence = "Most customers who cancel showed warning signs months earlier."
    assert sentence in text
    churn.write_text(text.replace(sentence, "Most customers who cancel Acme<br>\nCloud showed warning signs "
                                            "months earlier."), encoding="utf-8")
    events = site_dir / EVENTS.lstrip("/")
    text = events.read_text(encoding="utf-8")
    assert text.count("</h1>") == 1
    events.write_text(text.replace("</h1>", "</h1>\n<p>Every event we run is registered in <strong>Acme</strong> "
                                            "Cloud, and the Acme Cloud dashboard shows the pipeline each one "
                                            "sourced within a week of the event.</p>", 1), encoding="utf-8")


@pytest.fixture(scope="module")
def pivot(database_server, tmp_path_factory):
    """run(policy, run_id): one refresh of the planted demo site under a messaging rule of that policy."""
    from tests.conftest import _reset_schema

    _reset_schema(database_server)
    home = tmp_path_factory.mktemp("home")
    site_dir = tmp_path_factory.mktemp("site") / "site"
    shutil.copytree(SITE_DIR, site_dir)
    plant(site_dir)
    with DemoSite(site_dir=site_dir) as web, FakeOpenAI() as server, pytest.MonkeyPatch.context() as env:
        use_environment(env, database_server, home)
        demo = embedding_through(load_site("demo").with_base_url(web.base_url), server)
        settings = Settings.from_env(database_url=database_server, home=home)

        def run(policy: str, run_id: str) -> str:
            rule = MessagingRule(term=RULE, replacement="Acme Platform", policy=policy)
            config = demo.model_copy(update={"messaging": MessagingConfig(rules=[rule])})
            return engine.refresh(settings, config, run_id=run_id)

        class Pivot:
            url = database_server
            base = web.base_url

        Pivot.run = staticmethod(run)
        yield Pivot


@pytest.fixture(scope="module")
def reported(pivot):
    return pivot.run("report", "msg__report")


def cli_json(capsys, *args: str):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def chunks_using_the_term(conn, snap) -> set[str]:
    """What the snapshot's table says, independently of sitekb.messaging: chunks whose text has the term."""
    table = snapshot_tables.qualified(snap.table_name).as_string(conn)
    return {row[0] for row in conn.execute(
        f"SELECT chunk_id FROM {table} WHERE content ~* %s", (r"acme[\s*_]+cloud",))}


def test_a_report_rule_publishes_and_names_both_pages_and_their_chunks(pivot, reported, capsys):
    urls = [pivot.base + CHURN, pivot.base + EVENTS]
    with store.connection(pivot.url) as conn:
        snap = snapshots.for_run(conn, reported)
        expected_chunks = chunks_using_the_term(conn, snap)
        summary = report.run_summary(conn, reported)
    assert snap.state == "published" and summary["status"] == "succeeded"
    assert len(expected_chunks) >= 2

    # The snapshot record (`sitekb snapshots show`): its quality summary names the pages and chunk ids.
    capsys.readouterr()
    assert main(["snapshots", "show", str(snap.snapshot_id)]) == 0
    record = json.loads(capsys.readouterr().out)
    (kept,) = record["quality"]["messaging"]
    assert kept["rule"] == RULE and kept["policy"] == "report"
    assert kept["urls"] == sorted(urls) and set(kept["chunk_ids"]) == expected_chunks
    assert kept["pages"] == 2 and kept["chunks"] == len(expected_chunks) and kept["held_back"] == 0

    # `sitekb messaging --json`: per page, how often, an excerpt and its chunks.
    found = cli_json(capsys, "messaging", "--site", "demo")
    assert found["snapshot_id"] == snap.snapshot_id and found["aliases"] == ["production"]
    (rule,) = found["rules"]
    assert rule["reason"] == 'retired term "Acme Cloud" (use "Acme Platform")'
    pages = {page["url"]: page for page in rule["pages"]}
    assert sorted(pages) == sorted(urls)
    assert pages[pivot.base + CHURN]["count"] == 1 and pages[pivot.base + EVENTS]["count"] == 2
    assert "cancel Acme Cloud showed" in pages[pivot.base + CHURN]["excerpt"]
    assert {c for page in pages.values() for c in page["chunk_ids"]} == expected_chunks == set(rule["chunk_ids"])
    assert all(page["chunk_ids"] for page in pages.values())

    # The text listing and the run summary.
    capsys.readouterr()
    assert main(["messaging", "--site", "demo"]) == 0
    text = capsys.readouterr().out
    assert f"Acme Cloud  [report]  2 page(s), {len(expected_chunks)} chunk(s)" in text
    assert pivot.base + CHURN in text and "1 of 1 rules still used" in text
    (line,) = summary["messaging"]
    assert (line["pages"], line["chunks"], line["held_back"]) == (2, len(expected_chunks), 0)
    assert sorted(line["urls"]) == sorted(urls) and set(line["chunk_ids"]) == expected_chunks
    expected_line = f'"Acme Cloud" (report): 2 pages, {len(expected_chunks)} chunks still use it'
    assert f"  messaging       {expected_line}" in report.format_summary(summary)
    assert f"- messaging: {expected_line}" in report.format_note(summary)


def test_a_block_rule_rejects_the_snapshot_and_the_live_one_stays(pivot, reported, capsys):
    with store.connection(pivot.url) as conn:
        live = snapshots.resolve(conn, "demo")
    with pytest.raises(QualityGateFailed) as err:
        pivot.run("block", "msg__block")
    message = str(err.value)
    assert "messaging rule 'Acme Cloud' (policy block)" in message and "not published" in message
    assert CHURN in message and EVENTS in message
    with store.connection(pivot.url) as conn:
        assert snapshots.resolve(conn, "demo").snapshot_id == live.snapshot_id
        rejected = snapshots.for_run(conn, "msg__block")
        summary = report.run_summary(conn, "msg__block")
    assert rejected.state == "rejected"
    assert [(r["check"], r["value"]) for r in rejected.reasons] == [("messaging", RULE)]
    assert f"`sitekb messaging --snapshot {rejected.snapshot_id}`" in rejected.reasons[0]["message"]
    assert summary["status"] == "blocked"
    assert f'"Acme Cloud" (block): 2 pages, {summary["messaging"][0]["chunks"]} chunks still use it' in \
        report.format_summary(summary)
    found = cli_json(capsys, "messaging", "--site", "demo", "--snapshot", str(rejected.snapshot_id))
    assert found["state"] == "rejected" and len(found["rules"][0]["pages"]) == 2


def test_a_quarantine_rule_holds_both_pages_back_until_they_are_approved(pivot, reported, capsys):
    urls = sorted([pivot.base + CHURN, pivot.base + EVENTS])
    pivot.run("quarantine", "msg__quarantine")
    with store.connection(pivot.url) as conn:
        snap = snapshots.resolve(conn, "demo")
        in_snapshot = {row[0] for row in conn.execute(
            f"SELECT DISTINCT url FROM {snapshot_tables.qualified(snap.table_name).as_string(conn)}")}
        failures = dict(conn.execute(
            "SELECT url, failures FROM sitekb.documents WHERE run_id = 'msg__quarantine' AND status = 'quarantined'"))
    assert snap.run_id == "msg__quarantine" and snap.state == "published"
    assert not set(urls) & in_snapshot and len(in_snapshot) > 30
    for url in urls:
        (failure,) = [f for f in failures[url] if f["check"] == "messaging"]
        assert failure["value"] == RULE and 'retired term "Acme Cloud" (use "Acme Platform")' in failure["message"]

    (rule,) = cli_json(capsys, "messaging", "--site", "demo")["rules"]
    assert rule["pages"] == [] and [p["url"] for p in rule["held_back"]] == urls
    held = cli_json(capsys, "quarantine", "--site", "demo")
    listed = {entry["url"] for ledger in held for entry in ledger["entries"]}
    assert set(urls) <= listed

    for url in urls:
        capsys.readouterr()
        assert main(["quarantine", "approve", url, "--site", "demo", "--reason", "the rename ships next week"]) == 0
    pivot.run("quarantine", "msg__approved")
    with store.connection(pivot.url) as conn:
        snap = snapshots.resolve(conn, "demo")
        in_snapshot = {row[0] for row in conn.execute(
            f"SELECT DISTINCT url FROM {snapshot_tables.qualified(snap.table_name).as_string(conn)}")}
    assert snap.run_id == "msg__approved" and set(urls) <= in_snapshot
    (rule,) = cli_json(capsys, "messaging", "--site", "demo")["rules"]
    # Approved, published, and still reported as using the term: the pivot is not done.
    assert [p["url"] for p in rule["pages"]] == urls and rule["held_back"] == [] and rule["chunk_ids"]
