"""The HTML report of a real pipeline run: the demo site crawled on 127.0.0.1, embedded by the fake OpenAI server
(a stand-in embedder: hashed words, no model), built, judged, published; then a second run the gate rejects.

The report is written by the CLI, served by `sitekb serve`'s app and by the Airflow Knowledge view's app, and
loaded in headless Chromium with no network: its charts are there and sized, nothing was fetched. Also writes
the README's screenshot, ``docs/images/report.png`` (with SITEKB_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from sitekb import engine, report, store
from sitekb.cli import main
from sitekb.errors import QualityGateFailed
from sitekb.settings import Settings
from sitekb.sites import load_site
from sitekb.store import coverage as coverage_store
from sitekb.store import snapshots
from tests.browser import chromium, needs_chromium, screenshot_path
from tests.fake_openai import FakeOpenAI, embedding_through, use_environment

LOST_PAGE = "/articles/email-deliverability-basics.html"
CHARTS = ("chart-timeline", "chart-funnel", "chart-sections", "chart-topics", "chart-spend")


@pytest.fixture(scope="module")
def history(database_server, demo_site, tmp_path_factory):
    """A published demo snapshot, then a run that loses a golden question's page and is rejected."""
    from tests.conftest import _reset_schema

    _reset_schema(database_server)
    home = tmp_path_factory.mktemp("home")
    with FakeOpenAI() as server, pytest.MonkeyPatch.context() as env:
        use_environment(env, database_server, home)
        config = embedding_through(load_site("demo").with_base_url(demo_site.base_url), server)
        settings = Settings.from_env(database_url=database_server, home=home)
        good = engine.refresh(settings, config, run_id="demo__report__good")
        narrowed = config.model_copy(update={"crawl": config.crawl.model_copy(
            update={"exclude_patterns": [LOST_PAGE.replace(".", r"\.")]})})
        with pytest.raises(QualityGateFailed):
            engine.refresh(settings, narrowed, run_id="demo__report__narrowed")
        yield {"good": good, "bad": "demo__report__narrowed", "url": database_server, "settings": settings,
               "home": home}


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.src, self.href = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            (self.src if name == "src" else self.href if name == "href" else [])[:0] = [value or ""]


def test_the_run_summary_shows_the_coverage_and_its_warning(history):
    with store.connection(history["url"]) as conn:
        summary = report.run_summary(conn, history["good"])
        record = coverage_store.get(conn, summary["snapshot_id"])
    assert summary["coverage"] == record and record["chunks"] == summary["chunks"]
    assert record["sections"][0]["name"] == "/articles/" and record["sections"][0]["share"] > 0.6
    assert 2 <= len(record["clusters"]) <= 8 and all(" / " in c["label"] for c in record["clusters"])
    text = report.format_summary(summary)
    assert "  coverage        sections /articles/" in text
    assert "WARNING         coverage: section /articles/ holds" in text
    assert "coverage warning**: section /articles/" in report.format_note(summary)


def test_the_cli_writes_one_self_contained_report(history, tmp_path, capsys):
    out = tmp_path / "demo.html"
    assert main(["report", "demo", "--out", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    html = out.read_text()
    for chart in CHARTS:
        assert f'id="{chart}"' in html
    assert "<script" not in html and "@import" not in html and "url(" not in html
    links = Links()
    links.feed(html)
    assert links.src == []   # nothing is loaded: every chart is inline
    assert all(not re.match(r"(?:https?:)?//", h) for h in links.href), links.href
    # The verdicts, in words.
    assert re.search(r"Published to production: \d+ of 8 golden questions answered", html)
    assert "Rejected: golden question" in html and LOST_PAGE in html and "The live snapshot stayed." in html
    assert "pages quarantined" in html or "page quarantined" in html
    assert "Warning:</b> section /articles/ holds" in html
    # Engineers find the Great Expectations Data Docs of the runs that wrote them.
    assert "Great Expectations Data Docs</a>" in html and 'href="file://' in html
    # A run in focus; an unknown site or run is a clear not-found.
    assert main(["report", "demo", "--run", history["bad"], "--out", str(tmp_path / "bad.html")]) == 0
    assert f"Funnel of run {history['bad']}" in (tmp_path / "bad.html").read_text()
    assert main(["report", "nosuch", "--out", str(tmp_path / "x.html")]) == 7
    assert "site 'nosuch' has no run and no snapshot (known sites: demo)" in capsys.readouterr().err
    assert main(["report", "demo", "--run", "nosuch", "--out", str(tmp_path / "x.html")]) == 7
    capsys.readouterr()
    assert main(["report", "demo", "--out", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["path"] == str(out.resolve()) and written["bytes"] == len(out.read_bytes())


def test_sitekb_serve_serves_the_report_with_its_own_policy(history):
    from sitekb import api

    app = api.create_app(history["settings"], database_url=history["url"])
    with TestClient(app) as client:
        page = client.get("/report/demo")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "style-src 'sha256-" in policy and "script-src" not in policy and "default-src 'none'" in policy
        assert 'id="chart-timeline"' in page.text
        assert client.get(f"/report/demo?run={history['bad']}").status_code == 200
        assert client.get("/report/nosuch").status_code == 404
        assert client.get("/report/demo?run=%00").status_code == 422
    locked = api.create_app(history["settings"], database_url=history["url"], api_keys=["k1"])
    with TestClient(locked) as client:
        assert client.get("/report/demo").status_code == 401
        assert client.get("/report/demo", headers={"X-API-Key": "k1"}).status_code == 200


def test_the_airflow_knowledge_view_serves_and_links_the_report(history):
    pytest.importorskip("airflow.api_fastapi.auth.managers.simple.simple_auth_manager")
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from sitekb.orchestration.knowledge import app as knowledge_app

    app = knowledge_app.create_app(database_url=history["url"], auth_manager=SimpleAuthManager())
    app.dependency_overrides[knowledge_app.current_user] = lambda: SimpleAuthManagerUser(username="v", role="viewer")
    with TestClient(app) as client:
        page = client.get("/report/demo")
        assert page.status_code == 200 and 'id="chart-sections"' in page.text
        assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
        assert 'id="report-link"' in client.get("/").text
        assert '"report/" + encodeURIComponent(site)' in client.get("/static/knowledge.js").text


@needs_chromium
def test_the_report_in_a_browser_draws_every_chart_and_fetches_nothing(history, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", "demo", "--out", str(out)]) == 0
    driver = chromium(tmp_path / "profile", width=1280, height=1000)
    try:
        driver.get(out.resolve().as_uri())
        boxes = driver.execute_script(
            """return [...document.querySelectorAll('svg.chart')].map((s) => {
                   const r = s.getBoundingClientRect();
                   return {id: s.id, width: r.width, height: r.height,
                           bars: [...s.querySelectorAll('rect.bar')].filter((b) => {
                               const q = b.getBoundingClientRect(); return q.width > 0 && q.height > 0; }).length,
                           title: (s.querySelector('title') || {}).textContent,
                           desc: (s.querySelector('desc') || {}).textContent};
               });""")
        found = {b["id"]: b for b in boxes}
        for chart in CHARTS:
            assert found[chart]["width"] > 300 and found[chart]["height"] > 100, found.get(chart)
            assert found[chart]["bars"] > 0 and found[chart]["title"] and found[chart]["desc"]
        # No request left the page: no resource entries at all, and no script ran.
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert driver.execute_script("return document.scripts.length") == 0
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(height, 1000), 3200))
        driver.save_screenshot(str(screenshot_path("report.png")))
    finally:
        driver.quit()
