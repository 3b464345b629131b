"""`sitekb rebuild SITE` (issue 13): a new snapshot from the pages already crawled, with the config as it is now.

The demo site is crawled once on 127.0.0.1 (embedded by the fake OpenAI server), then its server is stopped
and a bare socket listens on its port, so any request a rebuild tried would show. The site file changes
(an exclusion pattern, a quality threshold; then the chunking and an approval requirement) and the CLI
rebuilds: no request, the excluded page gone from the published snapshot with its reason in the ledger and
the diff, only the chunk texts the cache lacks embedded. Also the refusals and the Airflow start param.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from sitekb import engine, store
from sitekb.cli import main
from sitekb.demo.server import DemoSite
from sitekb.settings import Settings
from sitekb.sites import SiteConfig, load_site
from sitekb.store import runs, snapshot_tables, snapshots
from tests.conftest import _reset_schema
from tests.fake_openai import FakeOpenAI, embedding_through, use_environment

EXCLUDED = "/articles/churn-signals.html"      # no golden question asks for it
MODEL, DIMS = "text-embedding-3-small", 64


@dataclass
class World:
    url: str
    settings: Settings
    config: SiteConfig
    crawl_run: str
    server: FakeOpenAI
    listener: socket.socket     # bound to the demo's port once the demo stopped: a request would queue here
    home: Path
    refresh_seconds: float


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _site_file(world: World, name: str, **changes: dict) -> str:
    """The demo config with ``changes`` (section -> fields) written as a site file."""
    data = world.config.model_dump(mode="json")
    for section, fields in changes.items():
        data[section] = {**data[section], **fields}
    path = world.home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def _no_connection_tried(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


@pytest.fixture(scope="module")
def world(database_server, tmp_path_factory):
    _reset_schema(database_server)
    home = tmp_path_factory.mktemp("rebuild")
    with FakeOpenAI() as server, pytest.MonkeyPatch.context() as env:
        use_environment(env, database_server, home / "home")
        settings = Settings.from_env(database_url=database_server, home=home / "home")
        with DemoSite(port=0) as demo:
            config = embedding_through(load_site("demo").with_base_url(demo.base_url), server, model=MODEL,
                                       dimensions=DIMS)
            started = time.monotonic()
            crawl_run = engine.refresh(settings, config, run_id="demo__cli__crawl")
            refresh_seconds = time.monotonic() - started
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", urlsplit(config.base_url).port))
        listener.listen(16)
        try:
            yield World(database_server, settings, config, crawl_run, server, listener, home, refresh_seconds)
        finally:
            listener.close()


@pytest.fixture(scope="module")
def rebuilt(world):
    """The site file gains an exclusion pattern and a higher min_words; the CLI rebuilds."""
    path = _site_file(world, "demo-pivot", crawl={"exclude_patterns": [r"/articles/churn-signals\.html$"]},
                      quality={"min_words": 300})
    sent = len(world.server.stats.texts)
    started = time.monotonic()
    code, out, err = _cli("rebuild", path, "--json")
    seconds = time.monotonic() - started
    assert code == 0, err[-3000:]
    return {"summary": json.loads(out), "stderr": err, "seconds": seconds, "path": path,
            "embedded_texts": world.server.stats.texts[sent:]}


def test_a_rebuild_sends_no_request_and_publishes_the_new_config(world, rebuilt):
    summary = rebuilt["summary"]
    assert summary["status"] == "succeeded" and summary["snapshot_state"] == "published"
    assert summary["aliases"] == ["production"]
    assert summary["run_id"].startswith("demo__rebuild__") and summary["rebuild_of"] == world.crawl_run
    from sitekb import report

    assert f"pages staged    {summary['pages_crawled']} from run {world.crawl_run} (no request sent)" in \
        report.format_summary(summary)
    assert _no_connection_tried(world.listener)
    with store.connection(world.url) as conn:
        run = runs.load(conn, summary["run_id"])
        crawl = runs.summary(conn, summary["run_id"])[0]["stages"]["crawl"]
        first = snapshots.for_run(conn, world.crawl_run)
        new = snapshots.get(conn, summary["snapshot_id"])
        held = snapshot_tables.page_chunks(conn, new, [world.config.base_url + EXCLUDED])
        before = snapshot_tables.page_chunks(conn, first, [world.config.base_url + EXCLUDED])
    assert run.params["rebuild_of"] == world.crawl_run
    assert crawl["requests"] == crawl["fetched"] == 0 and crawl["pages"] == summary["pages_crawled"] > 40
    assert crawl["excluded_now"] == {"excluded-pattern": [world.config.base_url + EXCLUDED]}
    assert before[world.config.base_url + EXCLUDED] and not held[world.config.base_url + EXCLUDED]
    # The crawl's own verdicts are carried into the new run: the opt-outs, robots.txt, the 404.
    assert {"label", "robots-meta", "robots-txt", "canonical", "excluded-pattern"} <= set(summary["excluded"])
    assert summary["crawl_errors"] == {"http_404": 1}
    # The higher min_words quarantines the home page (254 words); the rest stays.
    assert world.config.base_url + "/" in summary["quarantined_urls"]
    assert "[crawl] rebuild of run demo__cli__crawl" in rebuilt["stderr"]


def _questions(world: World) -> set[str]:
    return {q.question for q in world.config.golden_questions}


def test_nothing_is_embedded_when_the_chunking_did_not_change(world, rebuilt):
    summary = rebuilt["summary"]
    assert summary["embeddings_computed"] == 0
    assert summary["embeddings_reused"] == summary["chunks"] > 0
    with store.connection(world.url) as conn:
        embed = runs.summary(conn, summary["run_id"])[0]["stages"]["embed"]
    assert embed["embedded"] == 0
    # The embedding server saw the golden questions (the gate asks them of the new snapshot), no chunk text.
    assert set(rebuilt["embedded_texts"]) <= _questions(world)


def test_the_exclusion_is_in_the_ledger_and_the_diff(world, rebuilt):
    url = world.config.base_url + EXCLUDED
    code, out, _ = _cli("exclusions", "--site", "demo", "--json")
    assert code == 0
    (ledger,) = json.loads(out)
    assert ledger["run_id"] == rebuilt["summary"]["run_id"] and ledger["target"] == "alias production"
    entries = {e["url"]: e for e in ledger["entries"]}
    assert entries[url]["kind"] == "excluded" and entries[url]["rule"] == "excluded-pattern"
    assert "crawl.exclude patterns" in entries[url]["reason"]
    assert any(e["rule"] == "label" for e in entries.values())     # the crawl's opt-out stays listed
    with store.connection(world.url) as conn:
        first = snapshots.for_run(conn, world.crawl_run).snapshot_id
    code, out, _ = _cli("snapshots", "diff", str(first), str(rebuilt["summary"]["snapshot_id"]), "--json")
    assert code == 0
    removed = {page["url"]: page for page in json.loads(out)["removed"]}
    assert removed[url]["kind"] == "excluded" and set(removed) == {url, world.config.base_url + "/"}
    assert rebuilt["summary"]["diff"]["removed"] == 2 and rebuilt["summary"]["diff"]["added"] == 0


def test_a_chunking_change_embeds_only_the_new_texts_and_an_approval_holds_the_alias(world, rebuilt):
    path = _site_file(world, "demo-chunking", crawl={"exclude_patterns": [r"/articles/churn-signals\.html$"]},
                      quality={"min_words": 300}, chunking={"target_tokens": 120},
                      airflow={"approval": {"required": True}})
    with store.connection(world.url) as conn:
        cached = {row[0] for row in conn.execute(
            "SELECT text_hash FROM sitekb.embedding_cache WHERE model = %s AND dimensions = %s", (MODEL, DIMS))}
    sent = len(world.server.stats.texts)
    code, out, err = _cli("rebuild", path, "--json")
    assert code == 0, err[-3000:]
    summary = json.loads(out)
    with store.connection(world.url) as conn:
        texts = {row[0] for row in conn.execute("SELECT text_hash FROM sitekb.chunks WHERE run_id = %s",
                                                (summary["run_id"],))}
        live = snapshots.resolve(conn, "demo", "production")
    new = texts - cached
    assert summary["rebuild_of"] == rebuilt["summary"]["run_id"]
    chunk_texts = [t for t in world.server.stats.texts[sent:] if t not in _questions(world)]
    assert 0 < summary["embeddings_computed"] == len(new) == len(chunk_texts)
    assert summary["embeddings_reused"] == summary["chunks"] - len(new)
    # The site now requires approval: validated, not published; the alias stays on the previous rebuild.
    assert summary["status"] == "succeeded" and summary["snapshot_state"] == "validated"
    assert live.snapshot_id == rebuilt["summary"]["snapshot_id"]
    assert _no_connection_tried(world.listener)


def test_a_dry_run_rebuild_reports_the_cost_and_publishes_nothing(world, rebuilt):
    code, out, err = _cli("rebuild", rebuilt["path"], "--dry-run", "--json")
    assert code == 0, err[-3000:]
    result = json.loads(out)
    assert result["pages"] > 40 and result["texts_to_embed"] == 0 and result["chunks"] > 0
    with store.connection(world.url) as conn:
        assert snapshots.resolve(conn, "demo", "production").snapshot_id == rebuilt["summary"]["snapshot_id"]


def test_a_rebuild_is_refused_while_another_run_of_the_site_is_running(world, rebuilt):
    with store.connection(world.url) as conn:
        engine.start(conn, world.settings, world.config, "demo__busy", {})
        try:
            code, _, err = _cli("rebuild", rebuilt["path"])
            assert code == 9 and "being refreshed by run demo__busy" in err and "Traceback" not in err
        finally:
            runs.fail(conn, "demo__busy", "the test is over")
        assert not conn.execute("SELECT 1 FROM sitekb.runs WHERE run_id LIKE 'demo__rebuild__%%' "
                                "AND status = 'running'").fetchone()


def test_a_rebuild_with_nothing_staged_is_refused_and_records_nothing(world):
    path = world.home / "fresh.yaml"
    path.write_text("name: fresh\nstart_urls: [http://127.0.0.1:9/]\ncrawl:\n  allow_private_addresses: true\n",
                    encoding="utf-8")
    code, _, err = _cli("rebuild", str(path))
    assert code == 7 and "nothing staged" in err and "sitekb run fresh" in err and "Traceback" not in err
    with store.connection(world.url) as conn:
        assert conn.execute("SELECT count(*) FROM sitekb.runs WHERE site = 'fresh'").fetchone()[0] == 0


def test_the_dag_rebuild_param_starts_a_rebuild_whose_crawl_task_sends_no_request(world, rebuilt, monkeypatch,
                                                                                   tmp_path):
    tasks = pytest.importorskip("sitekb.orchestration.tasks")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for name in ("AIRFLOW_CONN_SITEKB_DB", "AIRFLOW_CONN_SITEKB_OPENAI", "SITEKB_DEMO_START_URL"):
        monkeypatch.delenv(name, raising=False)
    with store.connection(world.url) as conn:
        (source,) = conn.execute("SELECT run_id FROM sitekb.runs WHERE site = 'demo' AND stages ? 'crawl' "
                                 "ORDER BY started_at DESC LIMIT 1").fetchone()   # the dry run's staging
    run_id = tasks.start(rebuilt["path"], {"rebuild": True}, "manual__rebuild")
    try:
        with store.connection(world.url) as conn:
            run = runs.load(conn, run_id)
        assert run.params["rebuild_of"] == source and run.site.base_url == world.config.base_url
        counts = tasks.run_stage("crawl", run_id)
        assert counts["requests"] == 0 and counts["pages"] > 40 and counts["rebuild_of"] == source
        assert _no_connection_tried(world.listener)
    finally:
        with store.connection(world.url) as conn:
            runs.fail(conn, run_id, "the test is over")


def _crawl_stage_of_a_rebuild(world: World, config: SiteConfig, run_id: str):
    """Only the crawl stage of a rebuild of ``config`` (its verdicts are all these tests look at)."""
    from sitekb import restage, stages
    from sitekb.stages import RunContext

    with store.connection(world.url) as conn:
        source, config = restage.plan(conn, config)
        run = engine.start(conn, world.settings, config, run_id, {"rebuild_of": source})
        try:
            return engine.execute(stages.get("crawl"), RunContext(run, world.settings, world.url, conn))
        finally:
            runs.fail(conn, run_id, "only its crawl stage ran")


def test_a_page_a_rule_left_out_comes_back_when_the_rule_goes_and_an_opt_out_erases_it(world, rebuilt):
    from sitekb.store import pages

    url = world.config.base_url + EXCLUDED
    out = _crawl_stage_of_a_rebuild(world, world.config.model_copy(update={"crawl": world.config.crawl.model_copy(
        update={"exclude_patterns": [r"/articles/churn-signals\.html$"]})}), "demo__stage__pattern")
    assert out.details["excluded_now"] == {"excluded-pattern": [url]}
    back = _crawl_stage_of_a_rebuild(world, world.config, "demo__stage__back")
    assert back.details["let_in_again"] == [url] and back.counts["excluded_now"] == 0
    with store.connection(world.url) as conn:
        assert url in {p.url for p in pages.kept_pages(conn, "demo", "demo__stage__back")}
        assert not conn.execute("SELECT 1 FROM sitekb.exclusions WHERE run_id = 'demo__stage__back' AND url = %s",
                                (url,)).fetchone()
    # A label added to the config is found in the stored body: the page's content is erased, as a crawl does.
    labelled = world.config.model_copy(update={"opt_out": world.config.opt_out.model_copy(
        update={"labels": [*world.config.opt_out.labels, "Churn rarely arrives as a surprise"]})})
    gone = _crawl_stage_of_a_rebuild(world, labelled, "demo__stage__label")
    assert gone.details["excluded_now"] == {"label": [url]}
    with store.connection(world.url) as conn:
        body, rule = conn.execute("SELECT body, excluded_rule FROM sitekb.pages WHERE site = 'demo' AND url = %s",
                                  (url,)).fetchone()
        documents = conn.execute("SELECT count(*) FROM sitekb.documents WHERE url = %s", (url,)).fetchone()[0]
    assert body is None and rule == "label" and documents == 0
    assert _no_connection_tried(world.listener)
