"""The SQL API frontends call (schema sitekb_api), as the sitekb_reader role, on synthetic snapshots.

Vectors are chosen so the right answer is known: vector mode is checked
against exact cosine ranking computed here, hybrid against the page fusion of
the two lists' standardised scores computed here.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector import Vector

from sitekb import query
from sitekb.errors import NotFound
from sitekb.query import Filters
from sitekb.settings import Settings
from sitekb.store import snapshots
from tests.db.factory import Page, make_snapshot, random_pages, reader_connection

DIMS = 8


def _unit(rng, n):
    m = rng.standard_normal((n, DIMS)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture
def corpus(conn, database_url):
    """A published snapshot of 12 pages x 3 chunks with known vectors, and a reader connection."""
    rng = np.random.default_rng(7)
    words = ["lead", "scoring", "email", "budget", "webinar", "routing", "consent", "churn", "pricing", "forms"]
    pages = []
    for p in range(12):
        texts = [f"{words[p % 10]} {words[(p + c) % 10]} notes {c} about topic {p}" for c in range(3)]
        pages.append(Page(f"https://s.example/{'blog' if p % 2 else 'docs'}/p{p}.html", f"Page {p}", texts,
                          headings=["Guide", f"Part {p}"], tags=["even" if p % 2 == 0 else "odd"],
                          language="en-GB" if p < 6 else "de", published=f"2024-{p + 1:02d}-15"))
    texts = [t for page in pages for t in page.chunks]
    vectors = dict(zip(texts, _unit(rng, len(texts))))
    snap = make_snapshot(conn, "s", pages, dims=DIMS, vectors=vectors, publish_as="production")
    reader = reader_connection(conn, database_url)
    yield {"snap": snap, "pages": pages, "vectors": vectors, "reader": reader, "rng": rng}
    reader.close()


def _search(reader, **kwargs):
    names = ", ".join(f"{k} => %({k})s" for k in kwargs if k != "site")
    return reader.execute(f"SELECT * FROM sitekb_api.search(%(site)s, {names})", {"site": "s", **kwargs}).fetchall()


def _exact_ranking(corpus, query: np.ndarray) -> list[str]:
    texts = list(corpus["vectors"])
    sims = np.array([corpus["vectors"][t] @ query for t in texts])
    return [texts[i] for i in np.argsort(-sims, kind="stable")]


def test_vector_search_returns_the_exact_nearest_chunks_with_citations(corpus):
    query = _unit(corpus["rng"], 1)[0]
    rows = _search(corpus["reader"], query_embedding=Vector(query), k=5, mode="vector")
    assert [r[6] for r in rows] == _exact_ranking(corpus, query)[:5]     # content, in exact cosine order
    first = rows[0]
    assert first[0] == corpus["snap"].snapshot_id and first[1] == 1      # snapshot id, rank
    assert first[3].startswith("https://s.example/") and first[4].startswith("Page ")
    assert first[5][0] == "Guide"                                          # heading path
    expected_score = float(corpus["vectors"][first[6]] @ query)
    assert first[7] == pytest.approx(expected_score, abs=1e-5)             # cosine similarity
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]


def test_keyword_search_uses_full_text_with_stemming(corpus):
    rows = _search(corpus["reader"], query="webinars", k=10, mode="keyword")   # stem of "webinar"
    assert rows and all("webinar" in r[6] for r in rows)
    assert [r[7] for r in rows] == sorted((r[7] for r in rows), reverse=True)
    assert _search(corpus["reader"], query="zeppelin", k=10, mode="keyword") == []


def _page_fusion(vector, keyword, weight):
    """The documented fusion, computed here: every candidate scored by both legs, a page by its best
    similarity and its best BM25 score, each standardised (z-score) over the list's 20 best pages,
    then weight * vector + rest * keyword; a page's passages together, its own best first."""
    similarity = {r[2]: r[7] for r in vector}
    relevance = {r[2]: r[7] for r in keyword}
    url = {r[2]: r[3] for r in vector + keyword}
    pool = similarity.keys() | relevance.keys()

    def z(values):
        top = np.array(sorted(values.values(), reverse=True)[:20])
        mean, sd = top.mean(), top.std()
        return lambda x: (x - mean) / sd if sd > 1e-9 else 0.0

    page_sim, page_rel = {}, {}
    for c in pool:
        page_sim[url[c]] = max(page_sim.get(url[c], -2), similarity[c])
        page_rel[url[c]] = max(page_rel.get(url[c], 0.0), relevance.get(c, 0.0))
    zv, zk = z(page_sim), z(page_rel)
    page = {u: weight * zv(page_sim[u]) + (1 - weight) * zk(page_rel[u]) for u in page_sim}
    own = {c: weight * zv(similarity[c]) + (1 - weight) * zk(relevance.get(c, 0.0)) for c in pool}
    order = sorted(pool, key=lambda c: (-page[url[c]], url[c], -own[c], c))
    return order, {c: page[url[c]] for c in pool}


@pytest.mark.parametrize("weight", [None, 0.0, 0.3, 1.0])
def test_hybrid_ranks_pages_by_both_legs_standardised_scores(corpus, weight):
    query = _unit(corpus["rng"], 1)[0]
    reader = corpus["reader"]
    vector = _search(reader, query_embedding=Vector(query), k=50, mode="vector")     # all 36 chunks
    keyword = _search(reader, query="pricing budget", k=50, mode="keyword")
    assert len(vector) == 36 and 0 < len(keyword) < 36
    order, fused = _page_fusion(vector, keyword, 0.85 if weight is None else weight)
    extra = {} if weight is None else {"vector_weight": weight}
    hybrid = _search(reader, query="pricing budget", query_embedding=Vector(query), k=20, mode="hybrid", **extra)
    assert [r[2] for r in hybrid] == order[:20]
    assert [r[7] for r in hybrid] == pytest.approx([fused[c] for c in order[:20]])
    pages = list(dict.fromkeys(r[3] for r in hybrid))
    assert all(len({r[3] for r in hybrid[i:]} & set(pages[:pages.index(r[3])])) == 0
               for i, r in enumerate(hybrid))                                      # a page's passages together
    if weight == 1.0:   # the vector leg alone: its pages in its own order
        assert pages == list(dict.fromkeys(r[3] for r in vector))[:len(pages)]
    if weight == 0.0:   # the keyword leg alone: its pages first, by their best BM25 score
        best = {}
        for r in keyword:
            best.setdefault(r[3], r[7])
        assert set(pages[:len(best)]) == set(best)
        assert [best[u] for u in pages[:len(best)]] == sorted(best.values(), reverse=True)


def test_hybrid_with_no_keyword_match_ranks_the_vector_legs_pages(corpus):
    query = Vector(_unit(corpus["rng"], 1)[0])
    reader = corpus["reader"]
    vector = _search(reader, query_embedding=query, k=50, mode="vector")
    hybrid = _search(reader, query="zeppelin", query_embedding=query, k=12, mode="hybrid", per_page=1)
    assert [r[3] for r in hybrid] == list(dict.fromkeys(r[3] for r in vector))[:12]


def test_without_a_mode_both_inputs_search_hybrid_and_one_input_its_own_mode(corpus):
    query = Vector(_unit(corpus["rng"], 1)[0])
    reader = corpus["reader"]
    both = {"query": "pricing budget", "query_embedding": query, "k": 10}
    assert _search(reader, **both) == _search(reader, mode="hybrid", **both)
    assert _search(reader, query_embedding=query, k=10) == _search(reader, query_embedding=query, k=10,
                                                                   mode="vector")
    assert _search(reader, query="pricing budget", k=10) == _search(reader, query="pricing budget", k=10,
                                                                    mode="keyword")


def test_hybrid_refuses_a_weight_outside_zero_to_one(corpus):
    query = _unit(corpus["rng"], 1)[0]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="vector_weight must be between 0 and 1"):
        _search(corpus["reader"], query="pricing", query_embedding=Vector(query), mode="hybrid", vector_weight=1.5)


def test_filters_restrict_every_mode(corpus):
    query = _unit(corpus["rng"], 1)[0]
    reader = corpus["reader"]
    common = {"query": "notes topic", "query_embedding": Vector(query), "k": 50}
    for mode in ("vector", "keyword", "hybrid"):
        blog = _search(reader, mode=mode, url_prefix="https://s.example/blog/", **common)
        assert blog and all(r[3].startswith("https://s.example/blog/") for r in blog)
        even = _search(reader, mode=mode, tags=["even", "missing"], **common)
        assert even and all(r[9] == ["even"] for r in even)
        english = _search(reader, mode=mode, language="en", **common)   # matches en-GB
        assert len(english) == 18 and all(r[8] == "en-GB" for r in english)
        spring = _search(reader, mode=mode, published_after="2024-03-01", published_before="2024-05-31", **common)
        assert sorted({r[10] for r in spring}) == ["2024-03-15", "2024-04-15", "2024-05-15"]
    # With a filter, vector search still returns k rows (iterative index scans), in exact order.
    german = _search(reader, mode="vector", language="de", query_embedding=Vector(query), k=10)
    allowed = {t for page in corpus["pages"] if page.language == "de" for t in page.chunks}
    assert [r[6] for r in german] == [t for t in _exact_ranking(corpus, query) if t in allowed][:10]


def test_a_pinned_snapshot_id_is_served_after_the_alias_moves_on(corpus, conn):
    old = corpus["snap"]
    new = make_snapshot(conn, "s", random_pages("s", pages=2), dims=DIMS, publish_as="production")
    reader = corpus["reader"]
    assert {r[0] for r in _search(reader, query="notes", mode="keyword", k=3)} == set()   # new has no "notes"
    pinned = _search(reader, query="notes", mode="keyword", k=3, snapshot_id=old.snapshot_id)
    assert pinned and {r[0] for r in pinned} == {old.snapshot_id}
    listed = {r[0]: r for r in reader.execute("SELECT snapshot_id, state, aliases FROM sitekb_api.snapshots")}
    assert listed == {old.snapshot_id: (old.snapshot_id, "retired", []),
                      new.snapshot_id: (new.snapshot_id, "published", ["production"])}
    assert reader.execute("SELECT site, alias, snapshot_id FROM sitekb_api.aliases").fetchall() == \
        [("s", "production", new.snapshot_id)]


def test_unpublished_and_unknown_snapshots_are_refused_with_reasons(corpus, conn):
    reader = corpus["reader"]
    validated = make_snapshot(conn, "s", random_pages("s"), dims=DIMS, seed=3)
    rejected = make_snapshot(conn, "s", random_pages("s"), dims=DIMS, seed=4, state="rejected")
    for sid in (validated.snapshot_id, rejected.snapshot_id, 999999):
        with pytest.raises(psycopg.errors.NoDataFound, match=f"snapshot {sid} is not available"):
            _search(reader, query="lead", mode="keyword", snapshot_id=sid)
    ids = {r[0] for r in reader.execute("SELECT snapshot_id FROM sitekb_api.snapshots")}
    assert ids == {corpus["snap"].snapshot_id}
    with pytest.raises(psycopg.errors.NoDataFound, match="site other has no snapshot published as production"):
        reader.execute("SELECT * FROM sitekb_api.search('other', query => 'x', mode => 'keyword')").fetchall()


def test_only_an_operator_who_asks_reads_an_unpublished_snapshot(corpus, conn):
    """The gate asks its golden questions of a snapshot before it is published, through the same function:
    a session must set sitekb.include_unpublished and may use schema sitekb. The reader never can."""
    building = make_snapshot(conn, "s", random_pages("s"), dims=DIMS, seed=3, state="building")
    rejected = make_snapshot(conn, "s", random_pages("s"), dims=DIMS, seed=4, state="rejected")

    def ask(session, sid, unpublished):
        with session.transaction():
            if unpublished:
                session.execute("SET LOCAL sitekb.include_unpublished = on")
            return _search(session, query="lead", mode="keyword", snapshot_id=sid)

    for sid in (building.snapshot_id, rejected.snapshot_id):
        assert {r[0] for r in ask(conn, sid, True)} == {sid}
        for session, unpublished in ((conn, False), (corpus["reader"], True), (corpus["reader"], False)):
            with pytest.raises(psycopg.errors.NoDataFound, match=f"snapshot {sid} is not available"):
                ask(session, sid, unpublished)
    # Through the query path: the CLI and the gate may, a caller that does not ask may not.
    assert query.search(conn, Settings(), "lead", site="s", snapshot_id=building.snapshot_id, mode="keyword",
                        unpublished=True).snapshot_id == building.snapshot_id
    with pytest.raises(NotFound, match=f"snapshot {building.snapshot_id} is not available"):
        query.search(conn, Settings(), "lead", site="s", snapshot_id=building.snapshot_id, mode="keyword")


def test_bad_requests_name_the_problem(corpus):
    reader = corpus["reader"]
    cases = [
        ({"query": "x", "mode": "fuzzy"}, "unknown search mode fuzzy"),
        ({"query": "x", "mode": "keyword", "k": 0}, "k must be between 1 and 100"),
        ({"query": "x", "mode": "vector"}, "vector search needs the query embedding"),
        ({"query_embedding": Vector(np.ones(DIMS, dtype=np.float32)), "mode": "hybrid"},
         "hybrid search needs the query text"),
        ({"query_embedding": Vector(np.ones(3, dtype=np.float32)), "mode": "vector"},
         "query_embedding has 3 dimensions; snapshot .* local:synthetic \\(8 dimensions\\)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            _search(reader, **kwargs)


def test_python_search_and_sql_api_agree(corpus, conn):
    """The CLI/gate/HTTP path (sitekb.query, as the owner) and a frontend on SQL (the reader) rank identically."""
    filters = Filters(url_prefix="https://s.example/docs/")
    python = query.search(conn, Settings(), "lead scoring notes", site="s", k=6, mode="keyword", filters=filters)
    sql = _search(corpus["reader"], query="lead scoring notes", k=6, mode="keyword",
                  url_prefix="https://s.example/docs/")
    assert python.snapshot_id == corpus["snap"].snapshot_id
    assert [(p.chunk_id, p.rank, p.score) for p in python] == [(r[2], r[1], r[7]) for r in sql]


def test_filters_and_deep_lists_rank_like_an_unfiltered_search(corpus):
    """One statement serves every search: a filter that keeps everything, or a deeper list, changes no rank."""
    for question in _unit(corpus["rng"], 5):
        direct = _search(corpus["reader"], query_embedding=Vector(question), k=5)
        filtered = _search(corpus["reader"], query_embedding=Vector(question), k=5, url_prefix="https://s.example/")
        deep = _search(corpus["reader"], query_embedding=Vector(question), k=60)
        assert direct == filtered == deep[:5]
        assert [r[6] for r in direct] == _exact_ranking(corpus, question)[:5]


def test_one_session_follows_the_alias_across_publish_rollback_and_retention(corpus, conn):
    """The direct vector search keeps its plan per snapshot (migration 0009): a session must still
    follow every alias move, and a retired snapshot's dropped view must not break the next search."""
    reader = corpus["reader"]
    old = corpus["snap"]
    query = Vector(_unit(corpus["rng"], 1)[0])

    def served():
        rows = _search(reader, query_embedding=query, k=3)
        assert len(rows) == 3 and len({r[0] for r in rows}) == 1
        return rows[0][0], [r[6] for r in rows]

    for _ in range(8):   # enough calls for the session to settle on a cached plan
        assert served()[0] == old.snapshot_id
    new_pages = random_pages("s", pages=2, seed=5)
    new = make_snapshot(conn, "s", new_pages, dims=DIMS, seed=5, publish_as="production")
    new_id, new_texts = served()
    assert new_id == new.snapshot_id
    assert set(new_texts) <= {t for page in new_pages for t in page.chunks}
    snapshots.rollback(conn, "s", actor="test", reason="test")
    assert served()[0] == old.snapshot_id
    snapshots.publish(conn, new.snapshot_id, actor="test", reason="test")
    assert served()[0] == new.snapshot_id
    assert snapshots.apply_retention(conn, "s", keep=1) == [old.snapshot_id]
    assert served() == (new_id, new_texts)
    with pytest.raises(psycopg.errors.NoDataFound, match=f"snapshot {old.snapshot_id} is not available"):
        _search(reader, query_embedding=query, k=3, snapshot_id=old.snapshot_id)


def test_objects_created_in_the_vector_schema_cannot_shadow_what_search_calls(corpus, conn):
    """A role that may create objects where the vector extension lives (often public) defines
    closer matches for the built-ins search calls on tags; search runs the built-ins regardless."""
    vector_schema = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension "
                                 "WHERE extname = 'vector'").fetchone()[0]
    conn.execute(f"GRANT CREATE ON SCHEMA {vector_schema} TO sitekb_reader")
    reader = corpus["reader"]
    try:
        reader.execute(f"""CREATE FUNCTION {vector_schema}.cardinality(text[]) RETURNS integer LANGUAGE plpgsql
                           AS $$ BEGIN RAISE EXCEPTION 'shadowed cardinality ran as %', current_user; END $$""")
        reader.execute(f"""CREATE FUNCTION {vector_schema}.overlaps_shadow(text[], text[]) RETURNS boolean
                           LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'shadowed && ran'; END $$""")
        reader.execute(f"CREATE OPERATOR {vector_schema}.&& (LEFTARG = text[], RIGHTARG = text[], "
                       f"FUNCTION = {vector_schema}.overlaps_shadow)")
        q = corpus["rng"].standard_normal(DIMS).astype(np.float32)
        for mode in ("vector", "hybrid"):
            rows = _search(corpus["reader"], query="lead scoring", query_embedding=Vector(q), k=5, mode=mode,
                           tags=["odd"])
            assert rows and all("odd" in row[9] for row in rows)
    finally:
        reader.execute(f"DROP OPERATOR IF EXISTS {vector_schema}.&& (text[], text[])")
        reader.execute(f"DROP FUNCTION IF EXISTS {vector_schema}.overlaps_shadow(text[], text[])")
        reader.execute(f"DROP FUNCTION IF EXISTS {vector_schema}.cardinality(text[])")
        conn.execute(f"REVOKE CREATE ON SCHEMA {vector_schema} FROM sitekb_reader")
