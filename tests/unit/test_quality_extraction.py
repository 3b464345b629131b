"""Extraction quality on the hand-written page set, and the boilerplate pruning that earns it."""

from __future__ import annotations

import pytest

from sitekb.extract import extract_document, visible_word_count
from sitekb.extract import _parse  # the same parse extract_document uses
from tests.benchmarks import extraction_eval


def test_the_fixture_set_is_complete():
    pages = extraction_eval.pages()
    assert 15 <= len(pages) <= 25
    assert all(expected.strip() for _, _, expected in pages)


@pytest.fixture(scope="module")
def scores() -> dict:
    return {name: extraction_eval.evaluate(extract, 3) for name, extract in
            (("sitekb", extraction_eval.sitekb_text), ("default", extraction_eval.trafilatura_default_text))}


def test_sitekb_settings_beat_trafilatura_defaults(scores):
    assert scores["sitekb"]["f1"] >= 0.98
    assert scores["sitekb"]["precision"] > scores["default"]["precision"]
    assert scores["sitekb"]["f1"] > scores["default"]["f1"]


def test_no_page_loses_more_than_a_tenth_of_its_content(scores):
    assert min(scores["sitekb"]["pages"].values()) > 0.9


def test_a_related_grid_inside_the_article_is_pruned():
    html = (extraction_eval.PAGES / "12-related-inside-article.html").read_text(encoding="utf-8")
    text = extract_document(html, "https://x.org/news").markdown
    assert "protected cycle lane" in text and "Mill Lane" in text
    assert "Bus lane cameras" not in text
    # trafilatura alone keeps it: the grid sits inside <article>.
    assert "Bus lane cameras" in extract_document(html, "https://x.org/news", prune_boilerplate=False).markdown


def test_a_content_container_with_a_boilerplate_word_in_its_class_is_kept():
    body = " ".join(f"Sentence {i} of the article explains one more step of the process in detail." for i in range(30))
    html = f"""<html><body><div class="post related-posts-enabled"><h1>Guide</h1><p>{body}</p></div>
<div class="social-links"><a href="/x">Follow us</a></div></body></html>"""
    doc = extract_document(html, "https://x.org/guide")
    assert doc is not None and "Sentence 29 of the article" in doc.markdown


def test_visible_words_skip_scripts_styles_and_head():
    html = """<html><head><title>Three words here</title><style>p { color: red }</style></head>
<body><script>var hidden = "not counted at all";</script><p>One two <b>three</b> four.</p><!-- a comment -->
<noscript>Enable JavaScript please</noscript><footer>five six</footer></body></html>"""
    assert visible_word_count(_parse(html)) == 6
