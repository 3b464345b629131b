"""Keyword search ranks by BM25 over per-snapshot postings (sitekb.build_postings).

The scores from sitekb_api.search are held to a Python computation of the same
recipe over the snapshot's own full-text vectors; the rest checks what the
ranking is for (rare words, exact identifiers) and the postings' life cycle:
old snapshots, retention, the reader role.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import psycopg
import numpy as np
import pytest

from sitekb import store
from sitekb.store import snapshots
from tests.db.factory import Page, make_snapshot, reader_connection

K1, B = 1.2, 0.75
_ENTRY = re.compile(r"'((?:[^']|'')*)'(?::([0-9A-D,]+))?")


def _terms(conn, tsv_text: str) -> Counter:
    """sitekb.bm25_terms in Python: term counts (every field alike), words joined by hyphens by their
    parts alone, dotted names also split."""
    tf: Counter = Counter()
    for lexeme, positions in _ENTRY.findall(tsv_text):
        lexeme = lexeme.replace("''", "'")
        if re.fullmatch(r"[^\W\d_]+(-[^\W\d_]+)+", lexeme):
            continue
        count = max(1.0, len(positions.split(",")) if positions else 0)
        tf[lexeme] += count
        if re.search(r"[A-Za-z_]\.[A-Za-z_]", lexeme):
            parts = conn.execute("SELECT tsvector_to_array(to_tsvector('english', translate(%s, '.', ' ')))",
                                 (lexeme,)).fetchone()[0]
            for part in parts:
                if part != lexeme:
                    tf[part] += count
    return tf


def _reference_scores(conn, snap, question: str) -> dict[str, float]:
    rows = conn.execute(f"SELECT chunk_id, tsv::text FROM sitekb_snapshots.{snap.table_name}").fetchall()
    docs = {chunk_id: _terms(conn, tsv) for chunk_id, tsv in rows}
    n = len(docs)
    avgdl = sum(sum(tf.values()) for tf in docs.values()) / n
    df = Counter(lexeme for tf in docs.values() for lexeme in tf)
    query = _terms(conn, conn.execute("SELECT to_tsvector('english', %s)::text", (question,)).fetchone()[0])
    scores = {}
    for chunk_id, tf in docs.items():
        dl = sum(tf.values())
        score = sum(math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * dl / avgdl)) for t in query if t in tf)
        if score:
            scores[chunk_id] = score
    return scores


def _keyword(conn, site: str, question: str, k: int = 10, **extra) -> list[tuple]:
    args = "".join(f", {name} => %({name})s" for name in extra)
    return conn.execute(
        f"SELECT chunk_id, url, score FROM sitekb_api.search(%(site)s, query => %(q)s, mode => 'keyword', "
        f"k => %(k)s{args})", {"site": site, "q": question, "k": k, **extra}).fetchall()


CORPUS = [
    Page("https://bm.example/pool.html", "Connection pools",
         ["A pool keeps database connections open and hands them to requests.",
          "Size the pool by the number of workers; a pool that is too small makes requests wait for a connection."],
         headings=["Pools", "Sizing"]),
    Page("https://bm.example/retry.html", "Retries",
         ["Retry a failed request with exponential backoff and jitter, up to a limit.",
          "A request that fails because the pool is exhausted is retried like any other transient error."]),
    Page("https://bm.example/cache.html", "Caching responses",
         ["Cache responses by URL. A cache hit skips the database; a miss fills the cache from the database."]),
    Page("https://bm.example/empty.html", "Notes", ["Short note."]),
]


def test_bm25_scores_from_sql_equal_a_python_reference(conn):
    snap = make_snapshot(conn, "bm", CORPUS, publish_as="production")
    for question in ("How big should the connection pool be for my workers?",
                     "retry a failed database request", "cache"):
        expected = _reference_scores(conn, snap, question)
        got = {chunk_id: score for chunk_id, _, score in _keyword(conn, "bm", question, k=100)}
        assert got.keys() == expected.keys(), question
        for chunk_id, score in expected.items():
            assert got[chunk_id] == pytest.approx(score, rel=1e-5), (question, chunk_id)


def _rare_word_pages() -> list[Page]:
    filler = "the service answers requests from many clients every day"
    pages = [Page(f"https://rare.example/w{i}.html", f"Widget {i}", [f"widget {filler} {i}"]) for i in range(8)]
    pages.append(Page("https://rare.example/many.html", "Many", [f"widget widget widget widget widget {filler}"]))
    pages.append(Page("https://rare.example/zephyr.html", "Other", [f"zephyr {filler}"]))
    return pages


def test_a_rare_word_outranks_a_common_one_repeated(conn):
    make_snapshot(conn, "rare", _rare_word_pages(), publish_as="production")
    rows = _keyword(conn, "rare", "widget zephyr")
    assert rows[0][1] == "https://rare.example/zephyr.html", rows


IDENTIFIER_PAGES = [
    Page("https://id.example/functools.html", "Higher-order functions and operations on callable objects",
         ["The decorator functools.lru_cache wraps a function with a memoizing callable that saves up to the "
          "maxsize most recent calls. It can save time when an expensive or I/O bound function is periodically "
          "called with the same arguments. Since a dictionary is used to cache results, the positional and "
          "keyword arguments to the function must be hashable. Set PYTHONHASHSEED to a fixed value to make "
          "hashes of str and bytes objects repeatable between runs of the interpreter."]),
    Page("https://id.example/caching.html", "Caching",
         ["Cache, cache, cache: a cache is fast.", "Cache entries expire; a cache miss refills the cache."]),
    Page("https://id.example/env.html", "Environment",
         ["Python reads environment variables at startup; a seed set there changes every run."]),
]


@pytest.mark.parametrize("question", [
    "What does functools.lru_cache cache?",
    "lru_cache decorator cache",
    "What does PYTHONHASHSEED set?",
])
def test_an_exact_identifier_ranks_its_page_first(conn, question):
    make_snapshot(conn, "ident", IDENTIFIER_PAGES, publish_as="production")
    rows = _keyword(conn, "ident", question)
    assert rows[0][1] == "https://id.example/functools.html", rows


CODE_PAGES = [
    Page("https://codes.example/f1234.html", "Replacement filters",
         ["Order SKU-1234 for the countertop unit A1-B2: the third-party cartridge fits it too."]),
    Page("https://codes.example/f1243.html", "Replacement filters",
         ["Order SKU-1243 for the under-sink unit; a third party sells adapters."]),
    Page("https://codes.example/catalog.html", "Catalog",
         ["Every SKU of the catalog, from 1000 to 1299, with third-party parts listed apart."]),
]


def test_a_code_keeps_matching_exactly_and_a_hyphenated_word_counts_by_its_parts(conn):
    snap = make_snapshot(conn, "codes", CODE_PAGES, publish_as="production")
    for question in ("Which filter is SKU-1234?", "a filter for the A1-B2"):
        assert _keyword(conn, "codes", question)[0][1] == "https://codes.example/f1234.html", question
    lexemes = {r[0] for r in conn.execute(f"SELECT DISTINCT lexeme FROM sitekb_snap_{snap.snapshot_id}.postings")}
    assert {"-1234", "a1-b2", "a1", "b2", "third", "parti"} <= lexemes     # the parser's own split of codes
    assert not lexemes & {"third-parti", "under-sink"}
    # "third-party" and "third party" ask the same: no rare compound lifts the pages that hyphenate it.
    hyphenated = [r[1:] for r in _keyword(conn, "codes", "third-party cartridge")]
    assert hyphenated == [r[1:] for r in _keyword(conn, "codes", "third party cartridge")]


def _has_postings(conn, snapshot_id: int) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (f"sitekb_snapshots.snap_{snapshot_id}_postings",)).fetchone()[0]


def test_a_snapshot_without_bm25_statistics_still_answers_and_migrate_builds_them(conn):
    snap = make_snapshot(conn, "old", CORPUS, publish_as="production")
    bm25 = _keyword(conn, "old", "connection pool workers")
    # As if its BM25 statistics were lost (dropped by hand): no terms, so no postings view.
    conn.execute(f"DROP TABLE sitekb_snapshots.snap_{snap.snapshot_id}_terms CASCADE")
    assert not _has_postings(conn, snap.snapshot_id)
    old = _keyword(conn, "old", "connection pool workers")
    assert old and old[0][1] == "https://bm.example/pool.html"
    assert [r[0] for r in old] != [] and [r[2] for r in old] != [r[2] for r in bm25]   # cover density, not BM25
    hybrid = conn.execute("SELECT url FROM sitekb_api.search('old', query => 'connection pool workers', "
                          "query_embedding => array_fill(0.3, ARRAY[8])::vector, mode => 'hybrid', k => 3)").fetchall()
    assert len(hybrid) == 3
    # `sitekb db migrate` repairs it (sitekb.ensure_search_views counts them again), and this
    # session's search, planned while the snapshot had none, ranks by them at once.
    store.migrate(conn)
    assert _has_postings(conn, snap.snapshot_id)
    assert _keyword(conn, "old", "connection pool workers") == bm25


def test_hybrid_fuses_the_bm25_list(conn):
    pages = _rare_word_pages()
    make_snapshot(conn, "hy", pages, publish_as="production")
    embedding = "array_fill(0.3, ARRAY[8])::vector"
    # The two legs as hybrid reads them: one chunk a page here, so a page's scores are its chunk's.
    vector = dict(conn.execute(f"SELECT url, score FROM sitekb_api.search('hy', query_embedding => {embedding}, "
                               "k => 50)").fetchall())
    keyword = dict(conn.execute("SELECT url, score FROM sitekb_api.search('hy', query => 'widget zephyr', "
                                "mode => 'keyword', k => 50)").fetchall())
    hybrid = dict(conn.execute(f"SELECT url, score FROM sitekb_api.search('hy', query => 'widget zephyr', "
                               f"query_embedding => {embedding}, mode => 'hybrid', k => 20)").fetchall())
    # BM25 ranks the rare word's page first in the keyword list; each leg's scores are standardised
    # over its pages (z-scores), then 0.85 and 0.15 weigh them.
    zephyr = "https://rare.example/zephyr.html"
    assert max(keyword, key=keyword.get) == zephyr
    v, kw = np.array(list(vector.values())), np.array([keyword.get(u, 0.0) for u in vector])
    expected = 0.85 * (vector[zephyr] - v.mean()) / v.std() + 0.15 * (keyword[zephyr] - kw.mean()) / kw.std()
    assert hybrid[zephyr] == pytest.approx(expected, abs=1e-6)


def test_retention_drops_a_snapshots_postings_with_it(conn):
    built = [make_snapshot(conn, "ret", CORPUS, seed=i, publish_as="production") for i in range(3)]
    assert all(_has_postings(conn, s.snapshot_id) for s in built)
    dropped = snapshots.apply_retention(conn, "ret", keep=1)
    assert dropped
    for snapshot_id in dropped:
        assert not _has_postings(conn, snapshot_id)
    assert _has_postings(conn, built[-1].snapshot_id)


def test_the_reader_searches_by_bm25_but_cannot_read_the_postings(conn, database_url):
    snap = make_snapshot(conn, "rd", CORPUS, publish_as="production")
    assert _has_postings(conn, snap.snapshot_id)
    reader = reader_connection(conn, database_url)
    try:
        rows = reader.execute("SELECT url FROM sitekb_api.search('rd', query => 'exponential backoff', "
                              "mode => 'keyword')").fetchall()
        assert rows[0][0] == "https://bm.example/retry.html"
        for statement in (f"SELECT * FROM sitekb_snapshots.snap_{snap.snapshot_id}_postings",
                          f"SELECT * FROM sitekb_snap_{snap.snapshot_id}.postings",
                          "SELECT * FROM sitekb_snap_gone.postings",
                          "SELECT sitekb.build_postings(1)",
                          "SELECT * FROM sitekb.bm25_terms('a'::tsvector)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
    finally:
        reader.close()
