"""Keyword search: BM25 postings against the cover-density ranking before them (issue 14).

Measured side by side in one run on one database, results in bench-results/keyword.json:

- quality on the pydocs dev set (/work/shared/devsets/pydocs, or SITEKB_PYDOCS):
  its site served on 127.0.0.1 and taken through sitekb's own crawl, extract,
  validate and chunk stages, then built into a snapshot with stand-in vectors
  (keyword mode needs none). Its 60 questions are asked through
  ``sitekb_api.search`` in keyword mode, ranked by the snapshot's BM25 postings
  and, with its postings view dropped as for a snapshot built before them, by
  ts_rank_cd; beside them a plain BM25 in Python (``bm25s``, Lucene variant, same
  k1 and b, its own tokenizer, English stop words and Snowball stemmer) over the
  same chunks' title, headings and text. Scored with the dev set's score.py
  (hit@1, hit@5, MRR@10 per kind, pages deduplicated);
- latency: p50/p95 of keyword search through ``sitekb_api.search`` as the
  reader role at SITEKB_BENCH_CHUNKS chunks (default 100,000) of synthetic text
  drawn from a Zipfian vocabulary, BM25 against ts_rank_cd on the same
  snapshot, in alternating blocks (ABBA...) after a warm-up of each.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sitekb import engine, stages, store
from sitekb.embedding import text_hash
from sitekb.settings import Settings
from sitekb.sites import SiteConfig, adhoc_site
from sitekb.store import fulltext, snapshot_tables, snapshots
from sitekb.store.embeddings import store_vectors
from tests.benchmarks.results import write_result
from tests.conftest import _reset_schema
from tests.db.factory import reader_connection

DEVSET = Path(os.environ.get("SITEKB_PYDOCS", "/work/shared/devsets/pydocs"))
N = int(os.environ.get("SITEKB_BENCH_CHUNKS", "100000"))
QUERIES = int(os.environ.get("SITEKB_BENCH_QUERIES", "100"))
BLOCKS = 2          # per path, alternating ABBA; the old ranking takes up to seconds a question at 100k
MODEL, DIMS = "stand-in", 4   # keyword mode reads no vector: the smallest the snapshot table accepts
WORDS_PER_CHUNK = 90
CHUNKS_PER_PAGE = 20
VOCABULARY = 50_000
K1, B = 1.2, 0.75


def _score_module():
    spec = importlib.util.spec_from_file_location("pydocs_score", DEVSET / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _stand_in_vectors(conn, run_id: str) -> None:
    hashes = [row[0] for row in conn.execute("SELECT DISTINCT text_hash FROM sitekb.chunks WHERE run_id = %s",
                                             (run_id,))]
    rng = np.random.default_rng(0)
    for start in range(0, len(hashes), 4096):
        batch = hashes[start:start + 4096]
        matrix = rng.standard_normal((len(batch), DIMS)).astype(np.float32)
        store_vectors(conn, MODEL, DIMS, batch, matrix / np.linalg.norm(matrix, axis=1, keepdims=True))


def _snapshot(conn, site: str, run_id: str) -> tuple[int, dict]:
    with conn.transaction():
        snapshot_id = snapshots.create_record(
            conn, site=site, run_id=run_id, provider="local", model=MODEL, dimensions=DIMS, tokenizer="bench",
            config_hash="bench", extractor_version="bench", chunker_version="bench")
    built = snapshot_tables.build(conn, snapshot_id, run_id, MODEL, DIMS)
    snapshots.set_state(conn, snapshot_id, "validated")
    snapshots.publish(conn, snapshot_id, "production", actor="bench", reason="keyword benchmark")
    return snapshot_id, built


def _without_postings(conn, snapshot_id: int) -> None:
    """The snapshot as one built before BM25: sitekb_api.search ranks it by ts_rank_cd."""
    conn.execute(f"DROP VIEW sitekb_snap_{snapshot_id}.postings")


def _with_postings(conn) -> None:
    conn.execute("SELECT sitekb.ensure_search_views()")


def _keyword_urls(conn, site: str, question: str) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT url FROM sitekb_api.search(%s, query => %s, mode => 'keyword', k => 100)", (site, question))]


def _scores(score, questions, run: dict[str, list[str]]) -> dict:
    out = {}
    for kind in ("all", "concept", "exact", "howto"):
        ranks = [score.first_hit_rank(run.get(q["question"], []),
                                      {score.normalize(u) for u in [q["expected_url"], *q.get("also", [])]}, True)
                 for q in questions if kind == "all" or q["kind"] == kind]
        n, hit1, hit5, mrr = score.summarize(ranks)
        out[kind] = {"n": n, "hit@1": round(hit1, 3), "hit@5": round(hit5, 3), "mrr@10": round(mrr, 3)}
    return out


def _python_bm25(conn, snapshot_id: int, questions) -> dict[str, list[str]]:
    import bm25s
    import Stemmer

    rows = conn.execute(f"SELECT url, coalesce(title, '') || ' ' || array_to_string(heading_path, ' ') || ' ' "
                        f"|| content FROM sitekb_snapshots.snap_{snapshot_id} ORDER BY chunk_id").fetchall()
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene", k1=K1, b=B)
    retriever.index(bm25s.tokenize([text for _, text in rows], stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    run = {}
    for q in questions:
        tokens = bm25s.tokenize([q["question"]], stopwords="en", stemmer=stemmer, show_progress=False)
        found, _ = retriever.retrieve(tokens, k=min(100, len(rows)), show_progress=False)
        run[q["question"]] = [rows[i][0] for i in found[0]]
    return run


def pydocs_site(server) -> SiteConfig:
    """The pydocs site served by ``server``, crawled as fast as this machine allows."""
    data = adhoc_site(f"http://127.0.0.1:{server.server_port}/index.html", name="pydocs",
                      allow_private=True).model_dump(mode="json")
    data["crawl"].update(max_pages=1000, download_delay=0, concurrency_per_host=8)
    return SiteConfig.model_validate(data)


def run_pydocs_stages(conn, settings, database_url: str, site: SiteConfig, run_id: str, names) -> dict:
    """Start run ``run_id`` of ``site`` and run the stages ``names`` in order; their counts by stage."""
    engine.start(conn, settings, site, run_id, {})
    ctx = engine.context(conn, settings, database_url, run_id)
    return {name: engine.execute(stages.get(name), ctx).counts for name in names}


def _pydocs_quality(database_server, tmp_path, monkeypatch) -> dict:
    import json

    questions = json.loads((DEVSET / "questions.json").read_text())
    score = _score_module()
    server = _serve(DEVSET / "site")
    try:
        monkeypatch.setenv("SITEKB_HOME", str(tmp_path))
        settings = Settings.from_env(database_url=database_server, home=tmp_path / "home")
        started = time.monotonic()
        with store.connection(database_server) as conn:
            stage_counts = run_pydocs_stages(conn, settings, database_server, pydocs_site(server), "pydocs__bench",
                                             ("crawl", "extract", "validate", "chunk"))
            _stand_in_vectors(conn, "pydocs__bench")
            snapshot_id, built = _snapshot(conn, "pydocs", "pydocs__bench")
            staged = time.monotonic() - started
            bm25_run = {q["question"]: _keyword_urls(conn, "pydocs", q["question"]) for q in questions}
            _without_postings(conn, snapshot_id)
            old_run = {q["question"]: _keyword_urls(conn, "pydocs", q["question"]) for q in questions}
            _with_postings(conn)
            python_run = _python_bm25(conn, snapshot_id, questions)
    finally:
        server.shutdown()
    return {"pages_crawled": stage_counts["crawl"].get("pages"), "chunks": built["chunks"],
            "documents": built["documents"], "postings": built["postings"], "stage_seconds": round(staged, 1),
            "sitekb_bm25": _scores(score, questions, bm25_run), "sitekb_ts_rank_cd": _scores(score, questions, old_run),
            "python_bm25s": _scores(score, questions, python_run)}


def _zipf_words(rng, count: int) -> np.ndarray:
    """Pseudo-words (syllables, so the parser reads one word each) ranked by a Zipf law, s = 1.07."""
    syllables = ["ka", "to", "ri", "ne", "sa", "lu", "mo", "pe", "di", "va", "go", "shi", "ten", "bor", "qua", "lex"]
    words = []
    for rank in range(VOCABULARY):
        n, parts = rank + 1, []
        while n:
            n, digit = divmod(n, len(syllables))
            parts.append(syllables[digit])
        words.append("".join(parts) + "x")
    weights = 1 / np.arange(1, VOCABULARY + 1) ** 1.07
    picks = rng.choice(VOCABULARY, size=count, p=weights / weights.sum())
    return np.array(words)[picks], np.array(words), weights / weights.sum()


def _stage_synthetic(conn, run_id: str, n: int, rng) -> list[str]:
    flat, vocabulary, p = _zipf_words(rng, n * WORDS_PER_CHUNK)
    texts = [" ".join(flat[i * WORDS_PER_CHUNK:(i + 1) * WORDS_PER_CHUNK]) for i in range(n)]
    with conn.transaction():
        with conn.cursor().copy("COPY sitekb.documents (run_id, site, url, content_hash, title, published, language, "
                                "tags, markdown, word_count) FROM STDIN") as copy:
            for page in range(0, n, CHUNKS_PER_PAGE):
                copy.write_row((run_id, "kwbench", f"https://kw.example/p{page}.html", str(page), f"Page {page}",
                                "2024-01-01", "en", ["bench"], texts[page], WORDS_PER_CHUNK))
        with conn.cursor().copy("COPY sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, "
                                "embed_text, text_hash, token_count) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                page = i - i % CHUNKS_PER_PAGE
                copy.write_row((run_id, f"c{i:07d}", "kwbench", f"https://kw.example/p{page}.html",
                                i % CHUNKS_PER_PAGE, ["Guide", f"Section {i % CHUNKS_PER_PAGE}"], text, text,
                                text_hash(text), WORDS_PER_CHUNK))
    # Questions of 3 to 8 words drawn from the same law: common words in most of them, a rare one in some.
    return [" ".join(vocabulary[rng.choice(VOCABULARY, size=rng.integers(3, 9), p=p)]) for _ in range(QUERIES)]


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def _latency(database_server) -> dict:
    rng = np.random.default_rng(0)
    with store.connection(database_server) as conn:
        started = time.monotonic()
        questions = _stage_synthetic(conn, "kwbench__full", N, rng)
        fulltext.index_run(conn, "kwbench__full")
        _stand_in_vectors(conn, "kwbench__full")
        staged = time.monotonic() - started
        snapshot_id, built = _snapshot(conn, "kwbench", "kwbench__full")
        reader = reader_connection(conn, database_server)
        statement = "SELECT * FROM sitekb_api.search('kwbench', query => %s, k => 10, mode => 'keyword')"
        timings = {"bm25": [], "ts_rank_cd": []}
        try:
            for block in range(2 * BLOCKS):
                path = ("bm25", "ts_rank_cd", "ts_rank_cd", "bm25")[block % 4]
                if path == "bm25":
                    _with_postings(conn)
                else:
                    _without_postings(conn, snapshot_id)
                reader.execute(statement, (questions[0],)).fetchall()   # plan this path's statement
                for question in questions:
                    t0 = time.perf_counter()
                    reader.execute(statement, (question,)).fetchall()
                    timings[path].append((time.perf_counter() - t0) * 1000)
                if path != "bm25":
                    _with_postings(conn)
        finally:
            reader.close()
    return {"chunks": built["chunks"], "postings": built["postings"], "stage_seconds": round(staged, 1),
            "build_load_seconds": built["load_seconds"], "build_index_seconds": built["index_seconds"],
            "queries": len(questions), "blocks_per_path": BLOCKS,
            **{f"{path}_ms": {"p50": _pct(v, 50), "p95": _pct(v, 95), "mean": round(statistics.mean(v), 2)}
               for path, v in timings.items()}}


@pytest.mark.skipif(not (DEVSET / "questions.json").is_file(), reason="the pydocs dev set is not on this machine")
def test_bench_keyword(database_server, tmp_path, monkeypatch):
    _reset_schema(database_server)
    with store.connection(database_server) as conn:
        store.migrate(conn)
    quality = _pydocs_quality(database_server, tmp_path, monkeypatch)
    latency = _latency(database_server)
    new, old, ref = quality["sitekb_bm25"], quality["sitekb_ts_rank_cd"], quality["python_bm25s"]

    def line(name, s):
        kinds = ", ".join(f"{k} {s[k]['mrr@10']}" for k in ("concept", "exact", "howto"))
        return (f"{name}: hit@1 {s['all']['hit@1']}, hit@5 {s['all']['hit@5']}, MRR@10 {s['all']['mrr@10']} "
                f"({kinds})")

    write_result("keyword", {"pydocs": quality, "latency": latency}, [
        f"pydocs dev set: {quality['pages_crawled']} pages crawled, {quality['documents']} documents, "
        f"{quality['chunks']} chunks, {quality['postings']} lexemes; 60 questions, keyword mode",
        line("sitekb BM25 postings", new),
        line("sitekb ts_rank_cd (before)", old),
        line("Python bm25s over the same chunks", ref),
        f"{latency['chunks']} Zipfian chunks ({latency['postings']} lexemes, build load "
        f"{latency['build_load_seconds']} s + index {latency['build_index_seconds']} s): keyword p50/p95 "
        f"BM25 {latency['bm25_ms']['p50']}/{latency['bm25_ms']['p95']} ms vs ts_rank_cd "
        f"{latency['ts_rank_cd_ms']['p50']}/{latency['ts_rank_cd_ms']['p95']} ms",
    ])
    assert new["all"]["mrr@10"] >= ref["all"]["mrr@10"] - 0.02, (new, ref)
    assert latency["bm25_ms"]["p50"] <= 15 and latency["bm25_ms"]["p95"] <= 40, latency
