"""Retrieval quality per mode on the pydocs dev set, crawled end to end and embedded for real (issue 14).

Measured side by side in one run on one snapshot, results in bench-results/retrieval.json:
the pydocs site (/work/shared/devsets/pydocs, or SITEKB_PYDOCS) served on 127.0.0.1,
taken through sitekb's crawl, extract, validate, chunk and embed stages with the
bundled local model, built and published; its 60 questions asked through
``sitekb_api.search`` (100 passages, pages deduplicated by the dev set's score.py:
hit@1, hit@5, MRR@10 per kind) in

- vector, keyword (BM25) and hybrid mode (the default: pages ranked by both legs'
  z-scores, vector weight 0.85), hybrid at vector weights 0.75 and 0.5, and the
  request without a mode (hybrid, as frontends get it);
- for comparison, computed here from the same two 50-deep lists: min-max
  normalised scores per passage at weight 0.75 (the fusion sitekb used before)
  and reciprocal rank fusion (k = 60, the one before that);
- page-aware answers: 10 passages at most one a page (``per_page => 1``), and
  ``sitekb_api.search_pages`` (10 pages).

The fusion and its weight were chosen on this set (the README's Retrieval
section has the grid); the benchmark keeps the numbers honest release to release.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from sitekb import query, store
from sitekb.settings import Settings
from tests.benchmarks.results import write_result
from tests.benchmarks.test_bench_keyword import (DEVSET, _score_module, _scores, _serve, pydocs_site,
                                                 run_pydocs_stages)
from tests.conftest import _reset_schema

KINDS = ("all", "concept", "exact", "howto")


def _urls(conn, question: str, vector, **kwargs) -> list[str]:
    names = "".join(f", {k} => %({k})s" for k in kwargs)
    sql = f"SELECT url FROM sitekb_api.search('pydocs', query => %(q)s, query_embedding => %(v)s{names})"
    return [r[0] for r in conn.execute(sql, {"q": question, "v": vector, **kwargs})]


def _legs(conn, question: str, vector, depth: int = 50):
    return [conn.execute("SELECT chunk_id, url, score FROM sitekb_api.search('pydocs', query => %s, "
                         "query_embedding => %s, mode => %s, k => %s)", (question, vector, mode, depth)).fetchall()
            for mode in ("vector", "keyword")]


def _rrf(conn, question: str, vector, k: int = 60) -> list[str]:
    fused, urls = {}, {}
    for leg in _legs(conn, question, vector):
        for rank, (chunk_id, url, _) in enumerate(leg, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
            urls[chunk_id] = url
    return [urls[c] for c in sorted(fused, key=lambda c: (-fused[c], c))]


def _minmax(conn, question: str, vector, weight: float = 0.75) -> list[str]:
    """Each list min-max normalised (its best 1, its last 0), weighted per passage: the fusion before."""
    fused, urls, similarity = {}, {}, {}
    for leg, w in zip(_legs(conn, question, vector), (weight, 1 - weight)):
        if not leg:
            continue
        best, last = leg[0][2], leg[-1][2]
        for chunk_id, url, value in leg:
            fused[chunk_id] = fused.get(chunk_id, 0.0) + w * ((value - last) / (best - last) if best != last else 1.0)
            urls[chunk_id] = url
        similarity = similarity or {c: v for c, _, v in leg}
    return [urls[c] for c in sorted(fused, key=lambda c: (-fused[c], -similarity.get(c, -2), c))]


@pytest.mark.skipif(not (DEVSET / "questions.json").exists(), reason=f"no pydocs dev set at {DEVSET}")
def test_retrieval_quality_per_mode(database_server, tmp_path, monkeypatch):
    _reset_schema(database_server)
    with store.connection(database_server) as conn:
        store.migrate(conn)
    questions = json.loads((DEVSET / "questions.json").read_text())
    score = _score_module()
    server = _serve(DEVSET / "site")
    try:
        monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
        settings = Settings.from_env(database_url=database_server, home=tmp_path / "home")
        started = time.monotonic()
        with store.connection(database_server) as conn:
            # No golden questions and no live snapshot: evaluate passes it, publish publishes it.
            counts = run_pydocs_stages(conn, settings, database_server, pydocs_site(server), "pydocs__retrieval",
                                       ("crawl", "extract", "validate", "chunk", "embed", "build", "evaluate",
                                        "publish"))
            prepared = time.monotonic() - started
            snap = query.resolve(conn, "pydocs", "production", None)
            vectors = {q["question"]: query.embed_question(snap, q["question"], settings) for q in questions}
            runs = {}
            variants = {
                "vector": {"mode": "vector", "k": 100},
                "keyword": {"mode": "keyword", "k": 100},
                "hybrid": {"mode": "hybrid", "k": 100},
                "no_mode": {"k": 100},
                "hybrid_weight_0.75": {"mode": "hybrid", "k": 100, "vector_weight": 0.75},
                "hybrid_weight_0.5": {"mode": "hybrid", "k": 100, "vector_weight": 0.5},
                "vector_per_page_1": {"mode": "vector", "k": 10, "per_page": 1},
                "hybrid_per_page_1": {"mode": "hybrid", "k": 10, "per_page": 1},
            }
            for name, kwargs in variants.items():
                runs[name] = {q["question"]: _urls(conn, q["question"], vectors[q["question"]], **kwargs)
                              for q in questions}
            runs["hybrid_minmax_0.75"] = {q["question"]: _minmax(conn, q["question"], vectors[q["question"]])
                                          for q in questions}
            runs["hybrid_rrf_60"] = {q["question"]: _rrf(conn, q["question"], vectors[q["question"]])
                                     for q in questions}
            runs["hybrid_pages_10"] = {
                q["question"]: [r[0] for r in conn.execute(
                    "SELECT url FROM sitekb_api.search_pages('pydocs', query => %s, query_embedding => %s, "
                    "mode => 'hybrid', k => 10, passages => 1)", (q["question"], vectors[q["question"]]))]
                for q in questions}
    finally:
        server.shutdown()
    scored = {name: _scores(score, questions, run) for name, run in runs.items()}
    beats = {kind: scored["hybrid"][kind]["mrr@10"] > max(scored["vector"][kind]["mrr@10"],
                                                          scored["keyword"][kind]["mrr@10"]) for kind in KINDS}

    def line(name):
        s = scored[name]
        return (f"{name}: hit@5 {s['all']['hit@5']}, MRR@10 {s['all']['mrr@10']} (concept {s['concept']['mrr@10']}, "
                f"exact {s['exact']['mrr@10']}, howto {s['howto']['mrr@10']})")

    summary = [f"pydocs dev set crawled and embedded end to end ({counts['build']['chunks']} chunks of "
               f"{counts['build']['documents']} pages, {snap['embedding_model']}); 60 questions, pages deduplicated",
               *[line(name) for name in runs],
               "hybrid above both legs: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in beats.items())]
    write_result("retrieval", {"chunks": counts["build"]["chunks"], "documents": counts["build"]["documents"],
                               "model": snap["embedding_model"], "prepare_seconds": round(prepared, 1),
                               "scores": scored, "hybrid_beats_both_legs": beats}, summary)
    # Sanity, not targets: every mode answers, a request without a mode is hybrid, and the default
    # fusion is no worse than the ones it replaced.
    assert all(s["all"]["hit@5"] > 0 for s in scored.values())
    assert runs["no_mode"] == runs["hybrid"]
    assert scored["hybrid"]["all"]["mrr@10"] >= max(scored["hybrid_rrf_60"]["all"]["mrr@10"],
                                                    scored["hybrid_minmax_0.75"]["all"]["mrr@10"])
