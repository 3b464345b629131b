"""End-to-end benchmark on the demo site: stage throughput, and the second run's reuse.

Two in-process refresh runs on a fresh database against the same demo server:
the first pays for every embedding, the second should reuse all of them and
answer most pages with 304s. Then a rebuild (`sitekb rebuild`) of the same
config: no request, every embedding reused, against the second run's time.
"""

from __future__ import annotations

import time

from sitekb import engine, report, store
from sitekb.settings import Settings
from tests.benchmarks.results import write_result
from tests.conftest import _reset_schema


def _rate(count: float, seconds: float | None) -> float:
    return round(count / seconds, 1) if seconds else float("inf")


def test_bench_end_to_end(database_server, demo_config, monkeypatch, tmp_path):
    _reset_schema(database_server)
    monkeypatch.setenv("SITEKB_DATABASE_URL", database_server)
    monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
    settings = Settings.from_env()
    runs = []
    for _ in range(2):
        started = time.monotonic()
        run_id = engine.refresh(settings, demo_config)
        wall = time.monotonic() - started
        with store.connection(database_server) as conn:
            summary = report.run_summary(conn, run_id)
        summary["wall_seconds"] = round(wall, 2)
        runs.append(summary)
    first, second = runs
    started = time.monotonic()
    rebuild_id = engine.rebuild(settings, demo_config)
    with store.connection(database_server) as conn:
        rebuilt = report.run_summary(conn, rebuild_id)
    rebuilt["wall_seconds"] = round(time.monotonic() - started, 2)
    s1 = first["stage_seconds"]
    data = {
        "first": first, "second": second,
        "throughput_first_run": {
            "crawl_pages_per_s": _rate(first["pages_crawled"], s1["crawl"]),
            "extract_documents_per_s": _rate(first["documents"] + first["quarantined"], s1["extract"]),
            "validate_documents_per_s": _rate(first["documents"] + first["quarantined"], s1["validate"]),
            "chunk_chunks_per_s": _rate(first["chunks"], s1["chunk"]),
            "embed_chunks_per_s": _rate(first["embeddings_computed"], s1["embed"]),
            "build_rows_per_s": _rate(first["chunks"], s1["build"]),
        },
        "reuse_ratio_second_run": round(second["embeddings_reused"] / max(1, second["chunks"]), 3),
        "speedup_second_run": round(first["wall_seconds"] / second["wall_seconds"], 2),
        "rebuild": rebuilt,
        "rebuild_vs_second_run": round(second["wall_seconds"] / rebuilt["wall_seconds"], 2),
    }
    t = data["throughput_first_run"]
    write_result("e2e_demo", data, [
        f"demo site: {first['pages_crawled']} pages, {first['documents']} documents, {first['chunks']} chunks "
        f"({first['embedding_model']})",
        f"first run {first['wall_seconds']} s: crawl {t['crawl_pages_per_s']} pages/s, extract "
        f"{t['extract_documents_per_s']} docs/s, validate {t['validate_documents_per_s']} docs/s, chunk "
        f"{t['chunk_chunks_per_s']} chunks/s, embed {t['embed_chunks_per_s']} chunks/s, load+index "
        f"{t['build_rows_per_s']} rows/s",
        f"second run {second['wall_seconds']} s: {second['embeddings_reused']}/{second['chunks']} embeddings reused "
        f"(ratio {data['reuse_ratio_second_run']}), {second['pages_not_modified']} pages answered 304, "
        f"speed-up x{data['speedup_second_run']}",
        f"rebuild {rebuilt['wall_seconds']} s (no request; crawl stage {rebuilt['stage_seconds']['crawl']} s against "
        f"{second['stage_seconds']['crawl']} s): {rebuilt['embeddings_computed']} embeddings computed, "
        f"x{data['rebuild_vs_second_run']} the second run's speed",
    ])
    assert rebuilt["embeddings_computed"] == 0
    assert data["reuse_ratio_second_run"] == 1.0
