"""A whole refresh with 1% of the pages edited, and a rebuild after an exclusion rule, against the first run (issue 13).

The pydocs development site (about 500 real documentation pages) is copied and
served on 127.0.0.1, and every run is the whole pipeline in this process
(:func:`sitekb.engine.refresh`: crawl, extract, validate, chunk, embed, build,
evaluate, publish), embedding through the stand-in OpenAI-compatible server of
the tests (tests/fake_openai.py), so no model's speed is in the numbers:

1. the first run crawls and builds everything;
2. 1% of the pages get a sentence more, and a refresh runs;
3. the site gains an exclusion rule (the deprecated distutils pages, about 2%
   of the site), and ``sitekb rebuild`` makes a new snapshot from the pages
   already staged, without crawling.

A second test measures the rebuild at the size the issue names: a generated site
of SITEKB_BENCH_PAGES (10,000) small pages of the pydocs site's prose
(tests/benchmarks/generated_pages.py), its first run against a rebuild that
leaves out one section of 100 pages (bench-results/rebuild_generated.json).

Each stage's time is the one the engine records with the run; a run's total is
its wall time less its embed stage (the issue's "embedding excluded"); the
ratios are of runs of this process, side by side. The incremental stages should
make a refresh and a rebuild cost about what changed: extract reuses the
documents of pages whose body did not change, validate keeps the verdicts of
documents it judged before, chunk keeps their chunks, build writes a delta
segment, and the gate, the diff and the golden questions still judge the whole
new snapshot.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from sitekb import engine, store
from sitekb.settings import Settings
from sitekb.store import runs
from tests.benchmarks import generated_pages
from tests.benchmarks.results import write_result
from tests.benchmarks.test_bench_keyword import DEVSET, _serve, pydocs_site
from tests.conftest import _reset_schema
from tests.fake_openai import FakeOpenAI, embedding_through, use_environment

EDITED_SHARE = 0.01
EXCLUDED = r"/distutils/"


def _stages(conn, run_id: str) -> dict[str, dict]:
    return {name: record for name, record in conn.execute(
        "SELECT key, value FROM sitekb.runs, jsonb_each(stages) WHERE run_id = %s", (run_id,)).fetchall()}


def _timed_run(settings, config, run_id: str, *, rebuild: bool = False) -> dict:
    started = time.monotonic()
    if rebuild:
        engine.rebuild(settings, config, run_id=run_id)
    else:
        engine.refresh(settings, config, run_id=run_id)
    wall = time.monotonic() - started
    with store.connection(settings.database_url) as conn:
        stages = _stages(conn, run_id)
        state = runs.summary(conn, run_id)[0]["status"]
        covered = conn.execute("""SELECT (c.coverage ->> 'seconds')::float FROM sitekb.snapshot_coverage c
                                  JOIN sitekb.snapshots s USING (snapshot_id) WHERE s.run_id = %s""",
                               (run_id,)).fetchone()
    if covered and "build" in stages:
        stages["build"]["coverage_seconds"] = round(covered[0], 3)
    seconds = {name: round(float(record.get("seconds") or 0), 3) for name, record in stages.items()}
    return {"wall": round(wall, 2), "without_embed": round(wall - seconds.get("embed", 0), 2), "status": state,
            "seconds": seconds, "counts": stages}


def _rebuild_excluding(settings, config, pattern: str, fake, run_id: str) -> tuple[dict, int]:
    """``sitekb rebuild`` with one more exclusion pattern: its timed run, and how many texts it embedded."""
    data = config.model_dump(mode="json")
    data["crawl"]["exclude_patterns"] = [*data["crawl"].get("exclude_patterns", []), pattern]
    sent = len(fake.stats.texts)
    rebuild = _timed_run(settings, type(config).model_validate(data), run_id, rebuild=True)
    return rebuild, len(fake.stats.texts) - sent


@pytest.mark.timeout(3600)
@pytest.mark.skipif(not (DEVSET / "site").is_dir(), reason=f"the pydocs development set is not at {DEVSET}")
def test_refresh_and_rebuild_against_the_first_run(database_server, tmp_path, monkeypatch):
    _reset_schema(database_server)
    site_dir = tmp_path / "site"
    shutil.copytree(DEVSET / "site", site_dir)
    server = _serve(site_dir)
    try:
        with FakeOpenAI() as fake:
            use_environment(monkeypatch, database_server, tmp_path / "home")
            settings = Settings.from_env(database_url=database_server, home=tmp_path / "home")
            config = embedding_through(pydocs_site(server), fake)
            with store.connection(database_server) as conn:
                store.migrate(conn)
            first = _timed_run(settings, config, "pydocs__refresh__1")

            pages = sorted(site_dir.rglob("*.html"))
            edited = pages[:: max(1, round(1 / EDITED_SHARE))]
            time.sleep(1.1)   # a new mtime second: the server's Last-Modified changes with the edit
            for page in edited:
                text = page.read_text(encoding="utf-8", errors="replace")
                page.write_text(text.replace("</p>", " This sentence was added for the refresh benchmark.</p>", 1),
                                encoding="utf-8")
            refresh = _timed_run(settings, config, "pydocs__refresh__2")

            rebuild, rebuild_embedded = _rebuild_excluding(settings, config, EXCLUDED, fake, "pydocs__rebuild__1")
    finally:
        server.shutdown()

    runs_ = {"first": first, "refresh": refresh, "rebuild": rebuild}
    names = [name for name in first["seconds"] if name in refresh["seconds"]]
    excluded = sum(1 for p in pages if EXCLUDED in "/" + p.relative_to(site_dir).as_posix())
    data = {
        "pages": first["counts"]["crawl"].get("pages"), "edited_pages": len(edited), "excluded_pages": excluded,
        "runs": {k: {"wall_seconds": v["wall"], "seconds_without_embed": v["without_embed"], "status": v["status"],
                     "stages": v["seconds"]} for k, v in runs_.items()},
        "ratio": {"refresh": round(refresh["without_embed"] / first["without_embed"], 3),
                  "rebuild": round(rebuild["without_embed"] / first["without_embed"], 3),
                  **{f"refresh_{n}": round(refresh["seconds"][n] / first["seconds"][n], 3)
                     for n in names if first["seconds"][n]}},
        "counts": {k: {n: {c: v["counts"][n].get(c) for c in _COUNTS.get(n, ()) if c in v["counts"][n]}
                       for n in v["counts"]} for k, v in runs_.items()},
        "rebuild_embedded_texts": rebuild_embedded,
    }
    summary = [
        f"pydocs, {data['pages']} pages; the whole pipeline in one process, embedding through a stand-in server "
        f"and left out of the totals",
        f"refresh with {len(edited)} pages edited ({EDITED_SHARE:.0%}): {refresh['without_embed']:.1f} s against "
        f"the first run's {first['without_embed']:.1f} s ({data['ratio']['refresh']:.1%}; target at most 10%)",
        f"rebuild after an exclusion rule ({excluded} pages, {EXCLUDED}): {rebuild['without_embed']:.1f} s "
        f"({data['ratio']['rebuild']:.1%} of the first run; target under 10%)",
        "stage seconds, first run -> refresh -> rebuild: " + ", ".join(
            f"{n} {first['seconds'][n]:.1f} -> {refresh['seconds'][n]:.1f} -> {rebuild['seconds'].get(n, 0):.1f}"
            for n in names),
        f"refresh: extract {_count(refresh, 'extract', 'extracted')} extracted, "
        f"{_count(refresh, 'extract', 'reused')} reused; validate judged {_count(refresh, 'validate', 'judged')}, "
        f"kept {_count(refresh, 'validate', 'validated_before')}; chunk kept the chunks of "
        f"{_count(refresh, 'chunk', 'reused_documents')} documents; build: {_built(refresh)}",
        f"rebuild: {_built(rebuild)}",
    ]
    write_result("refresh", data, summary)
    assert first["status"] == refresh["status"] == rebuild["status"] == "succeeded"
    assert _count(refresh, "extract", "reused") >= _count(first, "extract", "documents") - len(edited)
    assert refresh["counts"]["build"].get("delta_rows") is not None


_COUNTS = {"crawl": ("pages", "requests", "reused"),
           "extract": ("documents", "extracted", "reused"),
           "validate": ("documents", "judged", "validated_before", "quarantined"),
           "chunk": ("chunks", "reused_documents", "chunk_suite_judged", "fulltext_computed", "fulltext_seconds"),
           "embed": ("chunks", "reused", "embedded"),
           "build": ("chunks", "segments", "delta_rows", "new_tombstones", "base_snapshot", "steps",
                     "coverage_seconds")}


def _count(run: dict, stage: str, name: str):
    return run["counts"].get(stage, {}).get(name)


def _built(run: dict) -> str:
    build = run["counts"].get("build", {})
    if build.get("base_snapshot") is None:
        return f"a new base of {build.get('chunks')} chunks"
    return (f"a delta of {build.get('delta_rows')} chunks and {build.get('new_tombstones')} tombstones on snapshot "
            f"{build.get('base_snapshot')}")


GENERATED_PAGES = int(os.environ.get("SITEKB_BENCH_PAGES", "10000"))
EXCLUDED_SECTION = "/section001/"


@pytest.mark.timeout(5400)
@pytest.mark.skipif(not (DEVSET / "site").is_dir(), reason=f"the pydocs development set is not at {DEVSET}")
def test_rebuild_of_a_generated_site_against_its_first_run(database_server, tmp_path, monkeypatch):
    """``sitekb rebuild`` after an exclusion rule on a site of SITEKB_BENCH_PAGES (10,000) small pages.

    The site (tests/benchmarks/generated_pages.py) is real documentation prose
    drawn into small pages; its first run is the whole pipeline, and the rebuild
    leaves out one section of 100 pages by an exclusion rule.
    """
    _reset_schema(database_server)
    site_dir = tmp_path / "site"
    pages = generated_pages.write_site(site_dir, GENERATED_PAGES, generated_pages.sentence_pool(DEVSET / "site"))
    server = _serve(site_dir)
    try:
        with FakeOpenAI() as fake:
            use_environment(monkeypatch, database_server, tmp_path / "home")
            settings = Settings.from_env(database_url=database_server, home=tmp_path / "home")
            data = embedding_through(pydocs_site(server), fake).model_dump(mode="json")
            data["name"] = "generated"
            data["crawl"]["max_pages"] = GENERATED_PAGES + GENERATED_PAGES // generated_pages.PER_SECTION + 10
            config = type(pydocs_site(server)).model_validate(data)
            with store.connection(database_server) as conn:
                store.migrate(conn)
            first = _timed_run(settings, config, "generated__refresh__1")
            rebuild, rebuild_embedded = _rebuild_excluding(settings, config, EXCLUDED_SECTION, fake,
                                                           "generated__rebuild__1")
    finally:
        server.shutdown()

    excluded = sum(1 for p in pages if EXCLUDED_SECTION in "/" + p.relative_to(site_dir).as_posix())
    runs_ = {"first": first, "rebuild": rebuild}
    result = {
        "pages": first["counts"]["crawl"].get("pages"), "article_pages": len(pages), "excluded_pages": excluded,
        "runs": {k: {"wall_seconds": v["wall"], "seconds_without_embed": v["without_embed"], "status": v["status"],
                     "stages": v["seconds"]} for k, v in runs_.items()},
        "ratio": {"rebuild": round(rebuild["without_embed"] / first["without_embed"], 3)},
        "counts": {k: {n: {c: v["counts"][n].get(c) for c in _COUNTS.get(n, ()) if c in v["counts"][n]}
                       for n in v["counts"]} for k, v in runs_.items()},
        "rebuild_embedded_texts": rebuild_embedded,
    }
    names = [name for name in first["seconds"] if name in rebuild["seconds"]]
    summary = [
        f"generated site, {result['pages']} pages ({len(pages)} small articles of pydocs prose); the whole pipeline "
        "in one process, embedding through a stand-in server and left out of the totals",
        f"rebuild after an exclusion rule ({excluded} pages, {EXCLUDED_SECTION}): {rebuild['without_embed']:.1f} s "
        f"against the first run's {first['without_embed']:.1f} s ({result['ratio']['rebuild']:.1%}; target under "
        f"10%); {rebuild_embedded} texts embedded",
        "stage seconds, first run -> rebuild: " + ", ".join(
            f"{n} {first['seconds'][n]:.1f} -> {rebuild['seconds'][n]:.1f}" for n in names),
        f"rebuild: {_built(rebuild)}",
    ]
    write_result("rebuild_generated", result, summary)
    assert first["status"] == rebuild["status"] == "succeeded"
    assert rebuild["counts"]["crawl"].get("requests") == 0
    assert rebuild["counts"]["build"].get("new_tombstones")
