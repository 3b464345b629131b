"""Page-aware results and a text-search configuration per language (issue 14), through the SQL API.

- ``per_page`` keeps at most N passages of a page, the best ones, in the order
  of the unlimited ranking; ``sitekb_api.search_pages`` groups the same ranking
  by page;
- a Spanish page is stemmed as Spanish and a Spanish question finds it through
  Spanish stemming, in a snapshot that also holds English pages which English
  questions still find.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector import Vector

from sitekb import query
from sitekb.settings import Settings
from sitekb.store import documents
from tests.db.factory import Page, make_snapshot, reader_connection

DIMS = 8


def _search(conn, function="search", **kwargs):
    names = ", ".join(f"{k} => %({k})s" for k in kwargs if k != "site")
    return conn.execute(f"SELECT * FROM sitekb_api.{function}(%(site)s, {names})",
                        {"site": kwargs.pop("site", "pp"), **kwargs}).fetchall()


@pytest.fixture
def crowded(conn, database_url):
    """Ten pages of 6 chunks each whose vectors cluster by page, so one page fills the top of a ranking."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((10, DIMS))
    pages, vectors = [], {}
    for p in range(10):
        texts = [f"pricing budget notes {c} of page {p} {'pricing ' * (p % 3)}" for c in range(6)]
        pages.append(Page(f"https://pp.example/p{p}.html", f"Page {p}", texts))
        for text in texts:
            v = centres[p] + 0.1 * rng.standard_normal(DIMS)
            vectors[text] = (v / np.linalg.norm(v)).astype(np.float32)
    snap = make_snapshot(conn, "pp", pages, dims=DIMS, vectors=vectors, publish_as="production")
    reader = reader_connection(conn, database_url)
    question = centres[0] / np.linalg.norm(centres[0])
    yield {"snap": snap, "reader": reader, "question": Vector(question.astype(np.float32))}
    reader.close()


def _capped(rows, n):
    """The first n rows of each URL, in order: what per_page must return."""
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        seen[row[3]] = seen.get(row[3], 0) + 1
        if seen[row[3]] <= n:
            out.append(row)
    return out


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
@pytest.mark.parametrize("per_page", [1, 2])
def test_per_page_keeps_each_pages_best_passages_in_the_unlimited_order(crowded, mode, per_page):
    common = {"query": "pricing budget", "query_embedding": crowded["question"], "mode": mode}
    unlimited = _search(crowded["reader"], k=60, **common)
    rows = _search(crowded["reader"], k=8, per_page=per_page, **common)
    urls = [r[3] for r in rows]
    assert max(urls.count(u) for u in urls) <= per_page
    expected = _capped(unlimited, per_page)[:8]
    assert [r[2] for r in rows] == [r[2] for r in expected]
    assert [r[7] for r in rows] == pytest.approx([r[7] for r in expected])
    assert [r[1] for r in rows] == list(range(1, len(rows) + 1))     # ranks renumbered
    assert len(rows) == min(8, 10 * per_page)


def test_asking_hybrid_for_more_than_fifty_passages_only_appends(crowded):
    # Each leg is normalised over its first 50 candidates, however deep the lists go.
    common = {"query": "pricing budget", "query_embedding": crowded["question"], "mode": "hybrid"}
    few = _search(crowded["reader"], k=10, **common)
    many = _search(crowded["reader"], k=60, **common)
    assert len(many) == 60
    assert [r[2] for r in many[:10]] == [r[2] for r in few]
    assert [r[7] for r in many[:10]] == pytest.approx([r[7] for r in few])


def test_without_per_page_one_page_may_fill_the_answer(crowded):
    rows = _search(crowded["reader"], query_embedding=crowded["question"], k=5)
    assert {r[3] for r in rows} == {"https://pp.example/p0.html"}   # what per_page is for


def test_search_pages_groups_the_same_ranking_by_page(crowded):
    common = {"query": "pricing budget", "query_embedding": crowded["question"], "mode": "hybrid"}
    pages = _search(crowded["reader"], "search_pages", k=4, passages=2, **common)
    passages = _search(crowded["reader"], k=8, per_page=2, **common)
    assert [p[1] for p in pages] == [1, 2, 3, 4]
    order = list(dict.fromkeys(r[3] for r in passages))[:4]
    assert [p[2] for p in pages] == order
    for page in pages:
        mine = [r for r in passages if r[3] == page[2]]
        assert [x["chunk_id"] for x in page[8]] == [r[2] for r in mine]
        assert page[4] == pytest.approx(mine[0][7])                       # the page's score is its best passage's
        assert page[3] == mine[0][4] and page[8][0]["heading_path"] == mine[0][5]
    assert pages[0][0] == crowded["snap"].snapshot_id


def test_search_pages_refuses_what_it_cannot_answer(crowded):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="between 1 and 20 pages"):
        _search(crowded["reader"], "search_pages", query_embedding=crowded["question"], k=21)
    crowded["reader"].rollback()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="between 1 and 5 a page"):
        _search(crowded["reader"], "search_pages", query_embedding=crowded["question"], passages=6)
    crowded["reader"].rollback()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="per_page must be between 1 and 100"):
        _search(crowded["reader"], query_embedding=crowded["question"], per_page=0)


# -- languages --------------------------------------------------------------

SPANISH = [
    Page("https://ml.example/es/baja.html", "Dar de baja la suscripción", [
        "Para dar de baja su suscripción mensual, escriba al equipo de facturación antes del "
        "día veinte. Las cancelaciones recibidas después se aplican al mes siguiente."], language="es"),
    Page("https://ml.example/es/envios.html", "Envíos internacionales", [
        "Los envíos a otros países tardan entre cinco y diez días hábiles. El seguimiento del paquete "
        "llega por correo electrónico."], language="es"),
]
ENGLISH = [
    Page("https://ml.example/en/cancel.html", "Cancelling a subscription", [
        "To cancel your monthly subscription, write to the billing team before the twentieth. "
        "Cancellations received later apply to the following month."], language="en"),
    Page("https://ml.example/en/shipping.html", "International shipping", [
        "Parcels to other countries take five to ten working days. Tracking arrives by email."], language="en"),
]


@pytest.fixture
def bilingual(conn, database_url):
    snap = make_snapshot(conn, "ml", SPANISH + ENGLISH, dims=DIMS, publish_as="production")
    reader = reader_connection(conn, database_url)
    yield {"snap": snap, "reader": reader, "conn": conn}
    reader.close()


def _keyword_urls(reader, question, **kwargs):
    return [r[3] for r in _search(reader, site="ml", query=question, mode="keyword", k=4, **kwargs)]


def test_a_spanish_question_finds_its_page_through_spanish_stemming(bilingual):
    question = "¿Cómo pido la cancelación?"
    conn = bilingual["conn"]
    # English stemming would not find it: "cancelación" and the page's "cancelaciones" stay apart ...
    english = conn.execute("SELECT to_tsvector('english', %s) @@ plainto_tsquery('english', %s)",
                           (SPANISH[0].chunks[0], question)).fetchone()[0]
    assert english is False
    # ... Spanish stemming makes them one word.
    assert _keyword_urls(bilingual["reader"], question, query_language="es")[0] == \
        "https://ml.example/es/baja.html"
    # Unnamed over SQL, the question is parsed in each of the snapshot's languages, and its Spanish
    # stem "cancel" is an English word too: both pages come back.
    assert set(_keyword_urls(bilingual["reader"], question)[:2]) == \
        {"https://ml.example/es/baja.html", "https://ml.example/en/cancel.html"}
    # The query path (HTTP, CLI, client, golden questions) detects the question's language.
    for asked, page in ((question, "https://ml.example/es/baja.html"),
                        ("¿Hacen seguimientos de los envíos?", "https://ml.example/es/envios.html"),
                        ("How do I cancel my subscription?", "https://ml.example/en/cancel.html")):
        result = query.search(bilingual["conn"], Settings(), asked, site="ml", mode="keyword")
        assert result[0].url == page, asked
    # A language the snapshot has no page in falls back to the snapshot's own.
    assert _keyword_urls(bilingual["reader"], "cancel subscription", query_language="de")[0] == \
        "https://ml.example/en/cancel.html"


def test_english_questions_still_find_english_pages_in_a_bilingual_snapshot(bilingual):
    assert _keyword_urls(bilingual["reader"], "How do I cancel my subscription?")[0] == \
        "https://ml.example/en/cancel.html"
    assert _keyword_urls(bilingual["reader"], "parcel tracking")[0] == "https://ml.example/en/shipping.html"
    # Named, the language filter both filters and parses the question in its language.
    assert _keyword_urls(bilingual["reader"], "cancelación", language="es") == ["https://ml.example/es/baja.html"]


def test_a_snapshot_records_the_configurations_its_chunks_use(bilingual):
    configs = bilingual["conn"].execute("SELECT text_configs FROM sitekb.snapshots WHERE snapshot_id = %s",
                                        (bilingual["snap"].snapshot_id,)).fetchone()[0]
    assert configs == ["english", "spanish"]
    # Spanish stop words are gone from a Spanish chunk's vector, Spanish stems are in it.
    tsv = bilingual["conn"].execute(
        f"SELECT tsv::text FROM sitekb_snapshots.snap_{bilingual['snap'].snapshot_id} WHERE url = %s",
        (SPANISH[0].url,)).fetchone()[0]
    assert "'cancel'" in tsv and "'suscripcion'" in tsv and "'la'" not in tsv and "'de'" not in tsv
    assert "'cancelacion'" not in tsv


@pytest.mark.parametrize("tag, default, config", [
    ("es", "en", "spanish"), ("pt-BR", "en", "portuguese"), ("de-CH", "en", "german"), ("nb", "en", "norwegian"),
    ("ja", "en", "simple"), ("", "en", "english"), (None, "en", "english"), (None, "fr", "french"),
    ("xx-unknown", "en", "simple"),
])
def test_text_config_maps_a_language_tag_to_postgres_configuration(conn, tag, default, config):
    assert conn.execute("SELECT sitekb.text_config(%s, %s)::text", (tag, default)).fetchone()[0] == config


@pytest.mark.parametrize("declared, measured, language", [
    ("en-GB", "en", "en-GB"),       # agreeing: the page's own tag is kept
    ("en", "es", "es"),             # a template's hard-coded lang="en" on a Spanish page
    ("es", None, "es"),             # too little text to tell: the page's word
    (None, "fr", "fr"),
    (None, None, None),
])
def test_document_language_trusts_a_detection_over_a_declaration(conn, declared, measured, language):
    measures = None if measured is None else psycopg.types.json.Jsonb({"language": measured})
    assert conn.execute("SELECT sitekb.document_language(%s, %s)", (declared, measures)).fetchone()[0] == language


def test_the_quality_checks_set_the_language_a_document_is_indexed_in(conn):
    make_snapshot(conn, "lang", ENGLISH[:1], dims=DIMS)
    run_id = conn.execute("SELECT run_id FROM sitekb.documents WHERE site = 'lang'").fetchone()[0]
    documents.set_verdicts(conn, run_id, [(ENGLISH[0].url, "accepted", [], {"language": "es"}, None)])
    assert conn.execute("SELECT index_language FROM sitekb.documents WHERE run_id = %s",
                        (run_id,)).fetchone()[0] == "es"
    documents.set_verdicts(conn, run_id, [(ENGLISH[0].url, "accepted", [], {"language": None}, None)],
                           default_language="fr")
    # Declared "en" with nothing detected: the declaration; the site default only when neither is known.
    assert conn.execute("SELECT index_language FROM sitekb.documents WHERE run_id = %s",
                        (run_id,)).fetchone()[0] == "en"
    conn.execute("UPDATE sitekb.documents SET language = NULL WHERE run_id = %s", (run_id,))
    documents.set_verdicts(conn, run_id, [(ENGLISH[0].url, "accepted", [], {}, None)], default_language="fr")
    assert conn.execute("SELECT index_language FROM sitekb.documents WHERE run_id = %s",
                        (run_id,)).fetchone()[0] == "fr"


def test_the_cli_caps_passages_a_page_and_lists_pages(crowded, capsys):
    import json

    from sitekb.cli import main

    assert main(["search", "pricing budget", "--site", "pp", "--mode", "keyword", "--k", "6", "--json"]) == 0
    urls = [r["url"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert len(urls) == 6 and max(urls.count(u) for u in urls) == 2        # the default: two a page
    assert main(["search", "pricing budget", "--site", "pp", "--mode", "keyword", "--k", "6", "--per-page", "0",
                 "--json"]) == 0
    urls = [r["url"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert max(urls.count(u) for u in urls) > 2                              # 0: no limit
    assert main(["search", "pricing budget", "--site", "pp", "--mode", "keyword", "--k", "3", "--pages", "2",
                 "--json"]) == 0
    pages = json.loads(capsys.readouterr().out)["pages"]
    assert [p["rank"] for p in pages] == [1, 2, 3] and all(len(p["passages"]) == 2 for p in pages)
    assert main(["search", "pricing budget", "--site", "pp", "--mode", "keyword", "--pages"]) == 0
    out = capsys.readouterr().out
    assert "Top 5 pages:" in out and "1. [" in out and "   - [" in out
    assert main(["search", "pricing budget", "--site", "pp", "--mode", "hybrid", "--vector-weight", "2"]) != 0
    assert "vector_weight must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("config, question, terms", [
    # Interrogatives are stop words once their accents go; the rest stems as written.
    ("spanish", "¿Cómo pido la cancelación?", {"pid", "cancel"}),
    ("spanish", "¿Dónde está mi café?", {"caf"}),
    ("french", "Où est ma facture ?", {"factur"}),
    # English loses nothing, and dotted names still bring their parts.
    ("english", "How does os.path.join work?", {"os.path.join", "os", "path", "join", "work"}),
])
def test_question_terms_drop_accented_stop_words(conn, config, question, terms):
    got = {r[0] for r in conn.execute("SELECT sitekb.question_terms(%s::regconfig, %s)", (config, question))}
    assert got == terms
