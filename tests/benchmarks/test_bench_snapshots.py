"""Snapshots at scale: ingest, query latency and recall, publish/rollback time (issue 6).

At SITEKB_BENCH_CHUNKS chunks (default 100,000) of synthetic 384-dimension
vectors, measured side by side in one run on one database:

- ingest: the snapshot load (``snapshot_tables.build`` copying the run's staged
  chunks, cached embeddings and cached full-text vectors into the new table,
  before its HNSW + GIN + btree indexes) against a raw binary COPY of the same
  rows into an unindexed table, and against langchain-postgres
  ``PGVectorStore`` and llama-index ``PGVectorStore`` fed the same rows (a
  SITEKB_BENCH_PEER_ROWS subset: they insert row by row). The staging that
  precedes the load (the chunk and embed stages' writes, and computing the
  full-text vectors of content never indexed before) is timed and reported beside it;
- queries: p50/p95 of ``sitekb_api.search`` as the sitekb_reader role against
  the bare pgvector HNSW query on the same table (same ef_search), and recall@10
  of the API against exact search. Both paths run every query once to warm
  shared buffers, then in alternating blocks of all queries (ABBA...), so each
  query meets the same cache state on both paths;
- publish and rollback time for snapshots of 1k, 10k and all chunks.

Vectors are clustered (unit vectors scattered around 2,000 random centres),
closer to real embeddings than uniform noise; queries are perturbed chunks.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from pgvector import Vector

from sitekb import store
from sitekb.store import fulltext, segments, snapshot_tables, snapshots
from sitekb.embedding import text_hash
from sitekb.store.embeddings import store_vectors
from tests.benchmarks.results import write_result
from tests.conftest import _reset_schema
from tests.db.factory import reader_connection

N = int(os.environ.get("SITEKB_BENCH_CHUNKS", "100000"))
PEER_ROWS = int(os.environ.get("SITEKB_BENCH_PEER_ROWS", "3000"))
QUERIES = int(os.environ.get("SITEKB_BENCH_QUERIES", "200"))
LATENCY_BLOCKS = 8   # per path, alternating ABBA: slow drift of a shared machine cancels out
MIXED_QUERIES = 40
DIMS = 384
CHUNKS_PER_PAGE = 20
WORDS_PER_CHUNK = 90
MODEL = "bench-synthetic"
SITE = "bench"
CONTENT = Path(__file__).resolve().parents[2] / "plugins" / "sitekb" / "demo" / "content" / "articles"


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIMS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIMS)).astype(np.float32) * 0.035
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vocabulary = sorted({w.strip(".,;:()\"'").lower() for f in CONTENT.glob("*.txt") for w in f.read_text().split()}
                        - {""})
    words = np.array(vocabulary)
    picks = rng.integers(0, len(words), (n, WORDS_PER_CHUNK))
    texts = [" ".join(words[row]) for row in picks]
    rows = []
    for i in range(n):
        page = i // CHUNKS_PER_PAGE
        rows.append({
            "chunk_id": f"c{i:07d}", "url": f"https://bench.example/p{page}.html", "title": f"Page {page}",
            "heading_path": ["Guide", f"Section {i % CHUNKS_PER_PAGE}"], "seq": i % CHUNKS_PER_PAGE,
            "content": texts[i], "token_count": WORDS_PER_CHUNK, "language": "en", "tags": ["bench"],
            "published": "2024-01-01",
        })
    queries = vectors[rng.integers(0, n, QUERIES)] + rng.standard_normal((QUERIES, DIMS)).astype(np.float32) * 0.03
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    query_texts = [" ".join(words[rng.integers(0, len(words), 3)]) for _ in range(QUERIES)]
    return rows, vectors, queries, query_texts


def _raw_copy(conn, rows, vectors, options: str = "") -> float:
    conn.execute("DROP TABLE IF EXISTS public.bench_raw_copy")
    conn.execute(f"""CREATE TABLE public.bench_raw_copy (chunk_id text, url text, title text, heading_path text[],
                         seq integer, content text, token_count integer, language text, tags text[],
                         published text, embedding vector(384)) {options}""")
    started = time.perf_counter()
    with conn.cursor().copy("COPY public.bench_raw_copy FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["text", "text", "text", "text[]", "int4", "text", "int4", "text", "text[]", "text", "vector"])
        for row, vector in zip(rows, vectors):
            copy.write_row((row["chunk_id"], row["url"], row["title"], row["heading_path"], row["seq"],
                            row["content"], row["token_count"], row["language"], row["tags"], row["published"],
                            Vector(vector)))
    seconds = time.perf_counter() - started
    conn.execute("DROP TABLE public.bench_raw_copy")
    return seconds


def _stage(conn, run_id: str, rows, vectors, with_cache: bool = True) -> float:
    """Write documents, chunks and cached vectors the way extract/chunk/embed stages do."""
    started = time.perf_counter()
    with conn.transaction():
        with conn.cursor().copy(
            "COPY sitekb.documents (run_id, site, url, content_hash, title, published, language, tags, markdown, "
            "word_count) FROM STDIN"
        ) as copy:
            for i in range(0, len(rows), CHUNKS_PER_PAGE):
                row = rows[i]
                copy.write_row((run_id, SITE, row["url"], row["url"], row["title"], row["published"], row["language"],
                                row["tags"], row["content"], WORDS_PER_CHUNK))
        with conn.cursor().copy(
            """COPY sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text, text_hash,
                                   token_count) FROM STDIN WITH (FORMAT BINARY)"""
        ) as copy:
            copy.set_types(["text", "text", "text", "text", "int4", "text[]", "text", "text", "bytea", "int4"])
            for row in rows:
                copy.write_row((run_id, row["chunk_id"], SITE, row["url"], row["seq"], row["heading_path"],
                                row["content"], row["content"], text_hash(row["content"]), row["token_count"]))
    if with_cache:
        for start in range(0, len(rows), 2048):   # one committed batch per embedding request, as embed_run does
            batch = rows[start:start + 2048]
            store_vectors(conn, MODEL, DIMS, [text_hash(r["content"]) for r in batch], vectors[start:start + 2048])
    return time.perf_counter() - started


def _snapshot(conn, run_id: str) -> tuple[int, dict]:
    with conn.transaction():
        snapshot_id = snapshots.create_record(
            conn, site=SITE, run_id=run_id, provider="local", model=MODEL, dimensions=DIMS, tokenizer="bench",
            config_hash="bench", extractor_version="bench", chunker_version="bench")
    built = snapshot_tables.build(conn, snapshot_id, run_id, MODEL, DIMS)
    snapshots.set_state(conn, snapshot_id, "validated")
    return snapshot_id, built


def _langchain(url: str, rows, vectors) -> float | str:
    try:
        from langchain_core.embeddings import Embeddings
        from langchain_postgres import PGEngine, PGVectorStore
    except ImportError as exc:
        return f"not installed ({exc.name}); make bench-peers"

    class Precomputed(Embeddings):  # never called: the rows come with their vectors
        def embed_documents(self, texts):
            raise AssertionError("the benchmark feeds precomputed vectors")

        def embed_query(self, text):
            raise AssertionError("the benchmark feeds precomputed vectors")

    engine = PGEngine.from_connection_string(url.replace("postgresql://", "postgresql+psycopg://", 1))
    engine.init_vectorstore_table("bench_langchain", DIMS, overwrite_existing=True)
    vector_store = PGVectorStore.create_sync(engine, Precomputed(), "bench_langchain")
    started = time.perf_counter()
    for start in range(0, len(rows), 500):
        batch = rows[start:start + 500]
        vector_store.add_embeddings([r["content"] for r in batch], [v.tolist() for v in vectors[start:start + 500]],
                             metadatas=[{k: r[k] for k in ("url", "title", "heading_path", "seq")} for r in batch])
    return time.perf_counter() - started


def _llama_index(url: str, rows, vectors, hybrid: bool = False) -> float | str:
    try:
        from llama_index.core.schema import TextNode
        from llama_index.vector_stores.postgres import PGVectorStore
    except ImportError as exc:
        return f"not installed ({exc.name}); make bench-peers"
    vector_store = PGVectorStore(
        connection_string=url.replace("postgresql://", "postgresql+psycopg://", 1),
        async_connection_string=url.replace("postgresql://", "postgresql+psycopg_async://", 1),
        table_name="bench_llama_hybrid" if hybrid else "bench_llama", embed_dim=DIMS, schema_name="public",
        perform_setup=True, hybrid_search=hybrid, text_search_config="english")
    nodes = [TextNode(text=r["content"], embedding=v.tolist(),
                      metadata={k: r[k] for k in ("url", "title", "heading_path", "seq")})
             for r, v in zip(rows, vectors)]
    started = time.perf_counter()
    for start in range(0, len(nodes), 500):
        vector_store.add(nodes[start:start + 500])
    return time.perf_counter() - started


def _progress(message: str, since: float) -> None:
    print(f"  [{time.perf_counter() - since:7.1f} s] {message}", flush=True)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


@pytest.mark.timeout(3600)
def test_bench_snapshots(database_server, tmp_path):
    _reset_schema(database_server)
    conn = store.connect(database_server)
    store.migrate(conn)
    data: dict = {"chunks": N, "dimensions": DIMS, "words_per_chunk": WORDS_PER_CHUNK, "queries": QUERIES}
    t0 = time.perf_counter()
    rows, vectors, queries, query_texts = _data(N)
    data["generate_seconds"] = round(time.perf_counter() - t0, 1)
    _progress(f"generated {N} rows", t0)

    # -- ingest ----------------------------------------------------------------
    # Each timed write starts after a checkpoint: otherwise whichever step happens to run
    # when max_wal_size is reached pays for flushing everything written before it.
    conn.execute("CHECKPOINT")
    raw = _raw_copy(conn, rows, vectors)
    _progress(f"raw COPY {raw:.1f} s", t0)
    # Diagnostic: COPY into a table with the snapshot tables' storage setting (rows kept whole,
    # nothing moved to TOAST), so the comparison can be read both ways.
    conn.execute("CHECKPOINT")
    raw_whole = _raw_copy(conn, rows, vectors, "WITH (toast_tuple_target = 8160)")
    _progress(f"raw COPY, rows whole {raw_whole:.1f} s", t0)
    conn.execute("CHECKPOINT")
    stage = _stage(conn, "bench__full", rows, vectors)
    _progress(f"staged {stage:.1f} s", t0)
    conn.execute("CHECKPOINT")
    first_text = fulltext.index_run(conn, "bench__full")       # what the chunk stage does on a new site
    again_text = fulltext.index_run(conn, "bench__full")       # ... and on a run whose chunks it has seen
    _progress(f"full-text vectors {first_text['fulltext_seconds']} s (again {again_text['fulltext_seconds']} s)", t0)
    conn.execute("CHECKPOINT")
    snapshot_id, built = _snapshot(conn, "bench__full")
    _progress(f"built: load {built['load_seconds']} s, indexes {built['index_seconds']} s", t0)
    assert built["chunks"] == N
    assert first_text["fulltext_computed"] == N and again_text["fulltext_computed"] == 0
    end_to_end = stage + first_text["fulltext_seconds"] + built["load_seconds"]
    ingest = {
        "raw_copy_rows_per_s": round(N / raw),
        "raw_copy_whole_rows_per_s": round(N / raw_whole),
        "build_load_rows_per_s": round(N / built["load_seconds"]),
        "staging_rows_per_s": round(N / stage),
        "end_to_end_rows_per_s": round(N / end_to_end),
        "raw_copy_seconds": round(raw, 2), "staging_seconds": round(stage, 2),
        "fulltext_first_seconds": first_text["fulltext_seconds"],
        "fulltext_cached_seconds": again_text["fulltext_seconds"],
        "build_load_seconds": built["load_seconds"], "index_seconds": built["index_seconds"],
    }
    # Diagnostic: the same load without the full-text column, to show what it costs.
    conn.execute("CHECKPOINT")
    with conn.transaction():
        conn.execute("SELECT set_config('enable_nestloop', 'off', true), set_config('parallel_setup_cost', '0', true), "
                     "set_config('parallel_tuple_cost', '0', true), set_config('work_mem', '64MB', true)")
        started = time.perf_counter()
        conn.execute(
            """CREATE TABLE public.bench_no_fts WITH (toast_tuple_target = 8160) AS
               SELECT c.chunk_id, c.url, d.title, c.heading_path, c.seq, c.text, c.token_count, d.language, d.tags,
                      d.published, e.embedding::vector(384) AS embedding
               FROM sitekb.chunks c JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
               JOIN sitekb.embedding_cache e ON e.model = 'bench-synthetic' AND e.dimensions = 384
                 AND e.text_hash = c.text_hash
               WHERE c.run_id = 'bench__full'""")
        ingest["load_without_fts_rows_per_s"] = round(N / (time.perf_counter() - started))
        conn.execute("DROP TABLE public.bench_no_fts")
    # A second build of the same staged run. The first read of freshly written rows sets their
    # hint bits, and with data checksums (PostgreSQL 18's default) the first change to a page
    # after a checkpoint logs the whole page: a real run, where embedding takes minutes and
    # checkpoints pass before the build, pays that; a rebuild does not.
    with conn.transaction():
        rebuild_id = snapshots.create_record(
            # Another site: on this one the build would find nothing changed and share the base.
            conn, site=SITE + "-rebuild", run_id="bench__rebuild", provider="local", model=MODEL, dimensions=DIMS,
            tokenizer="bench", config_hash="bench", extractor_version="bench", chunker_version="bench")
    conn.execute("CHECKPOINT")
    rebuilt = snapshot_tables.build(conn, rebuild_id, "bench__full", MODEL, DIMS)
    ingest["rebuild_load_rows_per_s"] = round(N / rebuilt["load_seconds"])
    snapshot_tables.drop(conn, rebuild_id)
    conn.execute("DELETE FROM sitekb.snapshots WHERE snapshot_id = %s", (rebuild_id,))
    ingest["build_load_vs_copy"] = round(ingest["build_load_rows_per_s"] / ingest["raw_copy_rows_per_s"], 3)
    ingest["end_to_end_vs_copy"] = round(ingest["end_to_end_rows_per_s"] / ingest["raw_copy_rows_per_s"], 3)
    data["ingest"] = ingest

    peers = {}
    feeds = (("langchain_postgres", _langchain), ("llama_index", _llama_index),
             ("llama_index_hybrid", lambda url, r, v: _llama_index(url, r, v, hybrid=True)))
    for name, feed in feeds:
        try:
            result = feed(database_server, rows[:PEER_ROWS], vectors[:PEER_ROWS])
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
            result = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        if isinstance(result, float):
            rate = PEER_ROWS / result
            peers[name] = {"rows": PEER_ROWS, "rows_per_s": round(rate, 1),
                           "load_speedup": round(ingest["build_load_rows_per_s"] / rate, 1),
                           "end_to_end_speedup": round(ingest["end_to_end_rows_per_s"] / rate, 1)}
        else:
            peers[name] = {"skipped": result}
    data["peers"] = peers
    _progress(f"peers {peers}", t0)

    # -- queries ---------------------------------------------------------------
    snapshots.publish(conn, snapshot_id, actor="bench", reason="bench")
    # The bare query reads the snapshot's one segment table itself, past the views.
    table = f"sitekb_snapshots.seg_{segments.manifest(conn, snapshot_id)[0].segment_id}"
    reader = reader_connection(conn, database_server)
    bare = store.connect(database_server)
    bare.execute("SET hnsw.ef_search = 100")   # what sitekb_api.search uses
    api_ms, bare_ms, recalls, hybrid_ms, keyword_ms = [], [], [], [], []
    api_sql = ("SELECT chunk_id, url, title, heading_path, content, score FROM sitekb_api.search(%s, "
               "query_embedding => %s, k => 10, mode => 'vector')")
    bare_sql = (f"SELECT chunk_id, url, title, heading_path, content, 1 - (embedding <=> %s) FROM {table} "
                "ORDER BY embedding <=> %s LIMIT 10")
    vecs = [Vector(q) for q in queries]
    paths = {"api": lambda v: reader.execute(api_sql, (SITE, v)).fetchall(),
             "bare": lambda v: bare.execute(bare_sql, (v, v)).fetchall()}
    for vec in vecs:   # warm: every page either path will touch is in shared buffers, plans are cached
        paths["api"](vec)
        paths["bare"](vec)
    # Latency: whole blocks of all queries per path, ABBA, so a query is never served warm by
    # the other path having just run it, and the machine's slow drift hits both paths alike.
    timings = {"api": api_ms, "bare": bare_ms}
    results = []
    for block in range(LATENCY_BLOCKS):
        for path in (("api", "bare") if block % 2 == 0 else ("bare", "api")):
            for vec in vecs:
                started = time.perf_counter()
                got = paths[path](vec)
                timings[path].append((time.perf_counter() - started) * 1000)
                if path == "api" and block == 0:
                    results.append(got)
    for q, got in zip(queries, results):
        exact = {f"c{i:07d}" for i in np.argpartition(-(vectors @ q), 10)[:10]}
        recalls.append(len(exact & {r[0] for r in got}) / 10)
    # Keyword and hybrid rank every full-text match: fewer of them keep this short.
    for q, text in list(zip(queries, query_texts))[:MIXED_QUERIES]:
        started = time.perf_counter()
        reader.execute("SELECT * FROM sitekb_api.search(%s, query => %s, query_embedding => %s, k => 10, "
                       "mode => 'hybrid')", (SITE, text, Vector(q))).fetchall()
        hybrid_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reader.execute("SELECT * FROM sitekb_api.search(%s, query => %s, k => 10, mode => 'keyword')",
                       (SITE, text)).fetchall()
        keyword_ms.append((time.perf_counter() - started) * 1000)
    bare.close()
    reader.close()
    _progress("queries done", t0)
    query = {
        "api_p50_ms": round(_pct(api_ms, 50), 2), "api_p95_ms": round(_pct(api_ms, 95), 2),
        "bare_p50_ms": round(_pct(bare_ms, 50), 2), "bare_p95_ms": round(_pct(bare_ms, 95), 2),
        "recall_at_10": round(statistics.mean(recalls), 4), "ef_search": 100,
        "hybrid_p50_ms": round(_pct(hybrid_ms, 50), 2), "hybrid_p95_ms": round(_pct(hybrid_ms, 95), 2),
        "keyword_p50_ms": round(_pct(keyword_ms, 50), 2), "keyword_p95_ms": round(_pct(keyword_ms, 95), 2),
    }
    query["shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]
    query["snapshot_size"] = conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))",
                                          (table,)).fetchone()[0]
    query["samples_per_path"] = len(api_ms)
    query["p50_ratio"] = round(query["api_p50_ms"] / query["bare_p50_ms"], 3)
    query["p95_ratio"] = round(query["api_p95_ms"] / query["bare_p95_ms"], 3)
    data["query"] = query

    # -- publish / rollback as the snapshot grows --------------------------------
    sizes = {}
    for size in (1_000, 10_000):
        run_id = f"bench__{size}"
        _stage(conn, run_id, rows[:size], vectors[:size], with_cache=False)   # vectors are cached already
        sizes[size] = _snapshot(conn, run_id)[0]
    sizes[N] = snapshot_id
    moves = {}
    for size, sid in sizes.items():
        base = sizes[10_000] if size == 1_000 else sizes[1_000]
        snapshots.publish(conn, base, actor="bench", reason="bench")
        publish_ms, rollback_ms = [], []
        for _ in range(5):
            started = time.perf_counter()
            snapshots.publish(conn, sid, actor="bench", reason="bench")
            publish_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            assert snapshots.rollback(conn, SITE, actor="bench", reason="bench") == (sid, base)
            rollback_ms.append((time.perf_counter() - started) * 1000)
        moves[size] = {"publish_ms": round(statistics.median(publish_ms), 2),
                       "rollback_ms": round(statistics.median(rollback_ms), 2)}
    data["publish_rollback"] = moves
    conn.close()

    peer_lines = []
    for name, p in peers.items():
        peer_lines.append(f"{name}: {p['rows_per_s']} rows/s on {p['rows']} rows -> sitekb load x{p['load_speedup']} "
                          f"faster (target >= 10x), end to end x{p['end_to_end_speedup']}"
                          if "rows_per_s" in p else f"{name}: skipped ({p['skipped']})")
    write_result("snapshots", data, [
        f"{N} chunks x {DIMS} dims: raw binary COPY {ingest['raw_copy_rows_per_s']} rows/s; sitekb snapshot load "
        f"{ingest['build_load_rows_per_s']} rows/s ({ingest['build_load_vs_copy']:.0%} of COPY, target >= 70%; "
        f"{ingest['build_load_rows_per_s'] / ingest['raw_copy_whole_rows_per_s']:.0%} of a COPY that keeps rows "
        f"whole as snapshot tables do, {ingest['raw_copy_whole_rows_per_s']} rows/s); "
        f"rebuilding the same staged run {ingest['rebuild_load_rows_per_s']} rows/s "
        f"({ingest['rebuild_load_rows_per_s'] / ingest['raw_copy_rows_per_s']:.0%}), without the full-text column "
        f"{ingest['load_without_fts_rows_per_s']} rows/s; indexes (HNSW + GIN + btree) {ingest['index_seconds']} s",
        f"before the load, staging chunks and embeddings {ingest['staging_seconds']} s and, for content never "
        f"indexed before only, full-text vectors {ingest['fulltext_first_seconds']} s (already cached: "
        f"{ingest['fulltext_cached_seconds']} s); end to end from Python rows {ingest['end_to_end_rows_per_s']} "
        f"rows/s ({ingest['end_to_end_vs_copy']:.0%} of COPY)",
        *peer_lines,
        f"vector query p50/p95: SQL API {query['api_p50_ms']}/{query['api_p95_ms']} ms vs bare HNSW "
        f"{query['bare_p50_ms']}/{query['bare_p95_ms']} ms (x{query['p50_ratio']}/x{query['p95_ratio']}, target "
        f"<= 1.2; {query['samples_per_path']} per path, shared_buffers {query['shared_buffers']}, snapshot "
        f"{query['snapshot_size']}); recall@10 {query['recall_at_10']} at ef_search 100 (target >= 0.95)",
        f"hybrid p50/p95 {query['hybrid_p50_ms']}/{query['hybrid_p95_ms']} ms; keyword "
        f"{query['keyword_p50_ms']}/{query['keyword_p95_ms']} ms",
        "publish / rollback median ms by snapshot size: " + ", ".join(
            f"{size}: {m['publish_ms']} / {m['rollback_ms']}" for size, m in moves.items()),
    ])
    assert query["recall_at_10"] >= 0.9
    assert max(m["publish_ms"] for m in moves.values()) < 1000
