"""Segment-based snapshots at scale: refresh cost, storage, search over deltas, compaction (issue 13).

At SITEKB_BENCH_CHUNKS chunks (default 100,000; 20 per page) of synthetic 384-dimension
vectors (clustered, as in test_bench_snapshots), measured side by side in one run
(bench-results/segments.json; at another size segments_<thousands>k.json):

- a full build of the site and five refreshes, each with 1% of the pages edited (every
  chunk of an edited page rewritten, a new vector for it), each built and published;
  against a full build of the final rows in the same run (another site, so no base);
- storage: every relation of the snapshots' schema with the six snapshots kept, against a
  single snapshot's (the full build of the final rows);
- search through ``sitekb_api.search`` as the reader: vector p50 over the base plus five
  deltas against the same snapshot after compaction (one table), recall@10 against exact
  search, and whether keyword and hybrid top-10 lists equal those of the full build;
- compaction: its time, and search latency from another session while it runs.

The staging of each refresh (copying the run's rows, its new vectors and full-text
vectors) is not timed: the crawl, extract, chunk and embed stages do it, and
test_bench_refresh measures them on a real site.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import numpy as np
import pytest
from pgvector import Vector

from sitekb import store
from sitekb.embedding import text_hash
from sitekb.store import fulltext, segments, snapshot_tables, snapshots
from sitekb.store.embeddings import store_vectors
from tests.benchmarks.results import write_result
from tests.benchmarks.test_bench_snapshots import CHUNKS_PER_PAGE, DIMS, MODEL, _data, _progress, _stage
from tests.conftest import _reset_schema
from tests.db.factory import reader_connection

N = int(os.environ.get("SITEKB_BENCH_CHUNKS", "100000"))
REFRESHES = 5
EDITED_SHARE = 0.01
QUERIES = 100
SITE = "bench"


def _record(conn, site: str, run_id: str) -> int:
    with conn.transaction():
        return snapshots.create_record(conn, site=site, run_id=run_id, provider="local", model=MODEL,
                                       dimensions=DIMS, tokenizer="bench", config_hash="bench",
                                       extractor_version="bench", chunker_version="bench")


def _build_and_publish(conn, site: str, run_id: str) -> tuple[int, dict, float]:
    snapshot_id = _record(conn, site, run_id)
    started = time.perf_counter()
    built = snapshot_tables.build(conn, snapshot_id, run_id, MODEL, DIMS)
    snapshots.set_state(conn, snapshot_id, "validated")
    snapshots.publish(conn, snapshot_id, actor="bench", reason="bench")
    return snapshot_id, built, time.perf_counter() - started


def _copy_run(conn, previous: str, run_id: str) -> None:
    """Stage run ``previous`` again as ``run_id`` (documents and chunks)."""
    with conn.transaction():
        conn.execute("""INSERT INTO sitekb.documents (run_id, site, url, content_hash, title, published, language,
                                                      tags, markdown, word_count, status)
                        SELECT %s, site, url, content_hash, title, published, language, tags, markdown, word_count,
                               status FROM sitekb.documents WHERE run_id = %s""", (run_id, previous))
        conn.execute("""INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                                                   text_hash, token_count)
                        SELECT %s, chunk_id, site, url, seq, heading_path, text, embed_text, text_hash, token_count
                        FROM sitekb.chunks WHERE run_id = %s""", (run_id, previous))


def _refresh_run(conn, previous: str, run_id: str, edition: int, pages: int, rng) -> dict[str, np.ndarray]:
    """Copy run ``previous`` as ``run_id`` with 1% of its pages rewritten; returns the new texts' vectors."""
    _copy_run(conn, previous, run_id)
    with conn.transaction():
        edited = [f"https://bench.example/p{p}.html" for p in rng.choice(pages, int(pages * EDITED_SHARE), False)]
        rows = conn.execute("SELECT chunk_id, text FROM sitekb.chunks WHERE run_id = %s AND url = ANY(%s)",
                            (run_id, edited)).fetchall()
        changed = []
        for chunk_id, text in rows:
            new_text = f"{text} revised in edition {edition}"
            changed.append((f"{chunk_id[:8]}e{edition}{chunk_id[8:]}", new_text, new_text, text_hash(new_text),
                            run_id, chunk_id))
        with conn.cursor() as cur:
            cur.executemany("""UPDATE sitekb.chunks SET chunk_id = %s, text = %s, embed_text = %s, text_hash = %s
                               WHERE run_id = %s AND chunk_id = %s""", changed)
    vectors = rng.standard_normal((len(changed), DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store_vectors(conn, MODEL, DIMS, [c[3] for c in changed], vectors)
    fulltext.index_run(conn, run_id)
    return {c[0]: v for c, v in zip(changed, vectors)}


def _size(conn, snapshot_ids: list[int] | None = None) -> int:
    """Bytes of the snapshots' relations: every one in sitekb_snapshots, or those these snapshots read."""
    if snapshot_ids is None:
        return conn.execute("""SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                               JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = 'sitekb_snapshots' AND c.relkind = 'r'""").fetchone()[0]
    names = set()
    for sid in snapshot_ids:
        names.add(f"snap_{sid}_terms")
        for seg in segments.manifest(conn, sid):
            names.update({f"seg_{seg.segment_id}", f"seg_{seg.segment_id}_postings"})
    return conn.execute("""SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                           JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE n.nspname = 'sitekb_snapshots' AND c.relname = ANY(%s)""",
                        (sorted(names),)).fetchone()[0]


def _timed(reader, sql_text: str, args) -> tuple[float, list]:
    started = time.perf_counter()
    rows = reader.execute(sql_text, args).fetchall()
    return (time.perf_counter() - started) * 1000, rows


VECTOR_SQL = "SELECT chunk_id FROM sitekb_api.search(%s, query_embedding => %s, k => 10, snapshot_id => %s)"
MIXED_SQL = ("SELECT chunk_id, score FROM sitekb_api.search(%s, query => %s, "
             "query_embedding => %s, k => 10, mode => %s, snapshot_id => %s)")


@pytest.mark.timeout(3600)
def test_bench_segments(database_server):
    _reset_schema(database_server)
    conn = store.connect(database_server)
    store.migrate(conn)
    t0 = time.perf_counter()
    rows, vectors, queries, query_texts = _data(N)
    pages = N // CHUNKS_PER_PAGE
    rng = np.random.default_rng(13)
    _stage(conn, "bench__0", rows, vectors)
    fulltext.index_run(conn, "bench__0")
    conn.execute("CHECKPOINT")
    _progress(f"staged {N} chunks", t0)
    first_id, first, first_seconds = _build_and_publish(conn, SITE, "bench__0")
    _progress(f"full build + publish {first_seconds:.1f} s", t0)
    single_size = _size(conn, [first_id])

    refreshes, kept = [], [first_id]
    for edition in range(1, REFRESHES + 1):
        run_id = f"bench__{edition}"
        changed = _refresh_run(conn, f"bench__{edition - 1}", run_id, edition, pages, rng)
        conn.execute("CHECKPOINT")
        snapshot_id, built, seconds = _build_and_publish(conn, SITE, run_id)
        kept.append(snapshot_id)
        refreshes.append({"snapshot_id": snapshot_id, "seconds": round(seconds, 2), "delta_rows": built["delta_rows"],
                          "tombstones": built["new_tombstones"], "segments": built["segments"],
                          "load_seconds": built["load_seconds"], "index_seconds": built["index_seconds"],
                          "steps": built["steps"]})
        _progress(f"refresh {edition}: {seconds:.2f} s, delta {built['delta_rows']} rows", t0)
        assert built["segments"] == edition + 1 and built["delta_rows"] == len(changed)
    live = kept[-1]
    kept_size = _size(conn)

    # The same final rows built in full, side by side: the one-table reference.
    conn.execute("CHECKPOINT")
    _copy_run(conn, f"bench__{REFRESHES}", "bench__single")
    conn.execute("CHECKPOINT")
    single_id, _, full_seconds = _build_and_publish(conn, SITE + "-single", "bench__single")
    _progress(f"full build of the final rows {full_seconds:.1f} s", t0)
    final_single_size = _size(conn, [single_id])

    # Search: base + five deltas against the one-table build of the same rows.
    reader = reader_connection(conn, database_server)
    final = dict(conn.execute(f"SELECT chunk_id, embedding FROM sitekb_snapshots.snap_{single_id}").fetchall())
    ids = list(final)
    matrix = np.stack([np.asarray(final[i].to_numpy() if hasattr(final[i], "to_numpy") else final[i],
                                  dtype=np.float32) for i in ids])
    vecs = [Vector(q) for q in queries[:QUERIES]]
    for vec in vecs:   # warm both
        reader.execute(VECTOR_SQL, (SITE, vec, live)).fetchall()
        reader.execute(VECTOR_SQL, (SITE + "-single", vec, single_id)).fetchall()
    deltas_ms, single_ms, recalls = [], [], []
    for block in range(4):
        for target in (("deltas", "single") if block % 2 == 0 else ("single", "deltas")):
            for q, vec in zip(queries[:QUERIES], vecs):
                site, sid = (SITE, live) if target == "deltas" else (SITE + "-single", single_id)
                ms, got = _timed(reader, VECTOR_SQL, (site, vec, sid))
                (deltas_ms if target == "deltas" else single_ms).append(ms)
                if target == "deltas" and block == 0:
                    exact = {ids[i] for i in np.argpartition(-(matrix @ q), 10)[:10]}
                    recalls.append(len(exact & {r[0] for r in got}) / 10)
    equal = {"keyword": 0, "hybrid": 0, "vector": 0}
    mixed_ms = {"keyword": [], "hybrid": []}
    overlap = {"keyword": [], "hybrid": [], "vector": []}
    for q, text in list(zip(queries, query_texts))[:QUERIES]:
        for mode in ("keyword", "hybrid"):
            ms, a = _timed(reader, MIXED_SQL, (SITE, text, Vector(q), mode, live))
            mixed_ms[mode].append(ms)
            b = reader.execute(MIXED_SQL, (SITE + "-single", text, Vector(q), mode, single_id)).fetchall()
            # The same passages in the same order with the same scores (to float precision: the
            # refresh adjusted the BM25 statistics, the single table counted them).
            equal[mode] += [r[0] for r in a] == [r[0] for r in b] and all(
                abs(float(x[1]) - float(y[1])) <= 1e-4 * max(1.0, abs(float(y[1]))) for x, y in zip(a, b))
            overlap[mode].append(len({r[0] for r in a} & {r[0] for r in b}) / max(len(b), 1))
        a = reader.execute(VECTOR_SQL, (SITE, Vector(q), live)).fetchall()
        b = reader.execute(VECTOR_SQL, (SITE + "-single", Vector(q), single_id)).fetchall()
        equal["vector"] += a == b
        overlap["vector"].append(len(set(a) & set(b)) / 10)
    _progress(f"search: vector p50 {statistics.median(deltas_ms):.2f} ms over deltas, "
              f"{statistics.median(single_ms):.2f} one table; equal {equal}", t0)

    # Compaction of the live snapshot while another session searches it.
    during, errors, stop = [], [], threading.Event()
    searcher = reader_connection(conn, database_server)

    def search():
        i = 0
        while not stop.is_set():
            try:
                during.append(_timed(searcher, VECTOR_SQL, (SITE, vecs[i % len(vecs)], live))[0])
            except Exception as exc:  # noqa: BLE001 - reported in the results
                errors.append(repr(exc))
            i += 1

    before_ms = [_timed(searcher, VECTOR_SQL, (SITE, v, live))[0] for v in vecs]
    thread = threading.Thread(target=search)
    started = time.perf_counter()
    thread.start()
    compacted = segments.compact(conn, live, force=True)
    compaction_seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    searcher.close()
    after_ms = [_timed(reader, VECTOR_SQL, (SITE, v, live))[0] for v in vecs]
    _progress(f"compaction {compaction_seconds:.1f} s, {len(during)} searches during it", t0)
    reader.close()

    refresh_median = statistics.median(r["seconds"] for r in refreshes)
    data = {
        "chunks": N, "pages": pages, "dimensions": DIMS, "edited_share": EDITED_SHARE,
        "first_build_publish_seconds": round(first_seconds, 2),
        "full_build_of_final_rows_seconds": round(full_seconds, 2),
        "refreshes": refreshes,
        "refresh_median_seconds": round(refresh_median, 2),
        "refresh_vs_full_build": round(refresh_median / full_seconds, 4),
        "bytes_single_snapshot": int(final_single_size), "bytes_first_snapshot": int(single_size),
        "bytes_six_snapshots_kept": int(kept_size),
        "storage_vs_single": round(kept_size / final_single_size, 3),
        "vector_p50_ms_deltas": round(statistics.median(deltas_ms), 3),
        "vector_p50_ms_one_table": round(statistics.median(single_ms), 3),
        "vector_p50_deltas_vs_one_table": round(statistics.median(deltas_ms) / statistics.median(single_ms), 3),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "keyword_p50_ms_deltas": round(statistics.median(mixed_ms["keyword"]), 3),
        "hybrid_p50_ms_deltas": round(statistics.median(mixed_ms["hybrid"]), 3),
        "keyword_lists_equal": f"{equal['keyword']}/{QUERIES}", "hybrid_lists_equal": f"{equal['hybrid']}/{QUERIES}",
        "vector_lists_equal": f"{equal['vector']}/{QUERIES}",
        "top10_overlap": {mode: round(float(np.mean(v)), 4) for mode, v in overlap.items()},
        "compaction_seconds": round(compaction_seconds, 2), "compaction": compacted,
        "search_p95_ms_before_compaction": round(float(np.percentile(before_ms, 95)), 3),
        "search_p95_ms_during_compaction": round(float(np.percentile(during, 95)), 3) if during else None,
        "search_p50_ms_after_compaction": round(statistics.median(after_ms), 3),
        "searches_during_compaction": len(during), "errors_during_compaction": errors[:5],
    }
    summary = [
        f"{N} chunks, {REFRESHES} refreshes of {EDITED_SHARE:.0%} of pages each",
        f"refresh build + publish median {refresh_median:.2f} s vs full build {full_seconds:.1f} s "
        f"({data['refresh_vs_full_build']:.1%}; target at most 5%)",
        f"storage with 6 snapshots kept: {data['storage_vs_single']}x one snapshot (target at most 1.25x)",
        f"vector p50 base + 5 deltas {data['vector_p50_ms_deltas']} ms vs one table {data['vector_p50_ms_one_table']} ms "
        f"({data['vector_p50_deltas_vs_one_table']}x; target 1.3x), recall@10 {data['recall_at_10']}",
        f"top-10 lists equal to one table's: keyword {data['keyword_lists_equal']}, hybrid "
        f"{data['hybrid_lists_equal']}, vector {data['vector_lists_equal']} (HNSW graphs differ); "
        f"overlap {data['top10_overlap']}",
        f"compaction {compaction_seconds:.1f} s; search p95 during {data['search_p95_ms_during_compaction']} ms vs "
        f"{data['search_p95_ms_before_compaction']} ms before, {len(errors)} errors",
    ]
    write_result("segments" if N == 100_000 else f"segments_{N // 1000}k", data, summary)
    assert not errors
