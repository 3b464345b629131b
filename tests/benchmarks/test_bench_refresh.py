"""A refresh with 1% of the pages edited, against the first run, stage by stage (issue 13).

The pydocs development site (about 500 real documentation pages) is copied and
served on 127.0.0.1. Run 1 crawls, extracts, validates and chunks it; then 1%
of the pages get a sentence more and run 2 does the same. Each stage's time is
the one the engine records with the run; the ratios are of the two runs of
this process, side by side. The extract stage copies the documents of the
pages whose body did not change and the chunk stage the chunks of documents
whose text did not change, so both should cost about the share edited.
Embedding and the build are measured elsewhere (the embedding cache,
test_bench_snapshots.py).
"""

from __future__ import annotations

import shutil
import time

import pytest

from sitekb import store
from sitekb.settings import Settings
from sitekb.store import runs
from tests.benchmarks.results import write_result
from tests.benchmarks.test_bench_keyword import DEVSET, _serve, pydocs_site, run_pydocs_stages
from tests.conftest import _reset_schema

STAGES = ("crawl", "extract", "validate", "chunk")
EDITED_SHARE = 0.01


@pytest.mark.skipif(not (DEVSET / "site").is_dir(), reason=f"the pydocs development set is not at {DEVSET}")
def test_refresh_of_one_percent_changed_against_the_first_run(database_server, tmp_path, monkeypatch):
    _reset_schema(database_server)
    site_dir = tmp_path / "site"
    shutil.copytree(DEVSET / "site", site_dir)
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    settings = Settings.from_env(database_url=database_server, home=tmp_path / "home")
    server = _serve(site_dir)
    try:
        site = pydocs_site(server)
        with store.connection(database_server) as conn:
            store.migrate(conn)
            first = run_pydocs_stages(conn, settings, database_server, site, "refresh__1", STAGES)
            runs.finish(conn, "refresh__1", "succeeded")   # the stages a refresh would run after chunk are not timed
            pages = sorted(site_dir.rglob("*.html"))
            edited = pages[:: max(1, round(1 / EDITED_SHARE))]
            time.sleep(1.1)   # a new mtime second: the server's Last-Modified changes with the edit
            for page in edited:
                text = page.read_text(encoding="utf-8", errors="replace")
                page.write_text(text.replace("</p>", " This sentence was added for the refresh benchmark.</p>", 1),
                                encoding="utf-8")
            second = run_pydocs_stages(conn, settings, database_server, site, "refresh__2", STAGES)
            seconds = {run: dict(conn.execute(
                "SELECT key, (value ->> 'seconds')::float FROM sitekb.runs, jsonb_each(stages) WHERE run_id = %s",
                (run,)).fetchall()) for run in ("refresh__1", "refresh__2")}
    finally:
        server.shutdown()
    one, two = seconds["refresh__1"], seconds["refresh__2"]
    data = {"pages": first["crawl"].get("pages"), "edited_pages": len(edited),
            "documents": first["extract"]["documents"], "first": one, "refresh": two,
            "extract": {"first": first["extract"], "refresh": second["extract"]},
            "ratio": {name: round(two[name] / one[name], 3) for name in STAGES if one.get(name)}}
    summary = [
        f"pydocs, {data['pages']} pages crawled, {data['documents']} documents; {len(edited)} pages edited "
        f"({EDITED_SHARE:.0%}) before the refresh",
        "stage seconds, first run -> refresh: " + ", ".join(
            f"{name} {one[name]:.1f} -> {two[name]:.1f} ({two[name] / one[name]:.0%})" for name in STAGES),
        f"extract: {second['extract']['extracted']} extracted, {second['extract']['reused']} reused "
        f"(first run: {first['extract']['extracted']} extracted)",
        f"chunk: {second['chunk']['reused_documents']} documents kept their chunks "
        f"(first run: {first['chunk']['reused_documents']})",
        "validate still judges every document (its batch checks need them all)",
    ]
    write_result("refresh", data, summary)
    assert second["extract"]["reused"] >= first["extract"]["documents"] - len(edited)
