"""Unit tests for sitekb.extract: inline HTML in, markdown Document out, no network."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
import trafilatura

from sitekb.extract import EXTRACTOR_VERSION, Document, extract_document, strip_nosnippet

URL = "https://example.org/guides/tide-pools?utm_source=feed"

ARTICLE = """<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<title>How Tide Pools Work | Coastal Notes</title>
<meta name="description" content="A field guide to the life and chemistry of rocky tide pools.">
<meta name="author" content="Maria Alvarez">
<meta name="keywords" content="tide pools, marine biology">
<meta property="article:published_time" content="2024-03-15T09:00:00Z">
<meta property="article:modified_time" content="2024-04-02T10:30:00Z">
<meta property="article:tag" content="ecology">
<link rel="canonical" href="/guides/tide-pools">
</head>
<body>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience. <button>Accept all cookies</button></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/guides">Guides</a></li><li><a href="/about">About us</a></li></ul></nav></header>
<main>
<article>
<h1>How Tide Pools Work</h1>
<p>Tide pools are small pockets of seawater left behind on rocky shores when the ocean retreats at low tide. They are home to a surprising variety of organisms that must survive dramatic changes in temperature, salinity and oxygen twice a day.</p>
<h2>The intertidal zone</h2>
<p>The intertidal zone is the strip of coastline between the highest and lowest tides. Organisms living here are alternately submerged and exposed, and each band of the shore supports a different community of algae, snails and barnacles.</p>
<h3>Upper zone</h3>
<p>The upper zone is only covered by the highest spring tides. Periwinkles and hardy lichens dominate this band because they tolerate long periods of drying out in the sun.</p>
<ul><li>Periwinkles seal their shells to keep moisture in.</li><li>Barnacles close their plates at low tide.</li></ul>
<h2>Chemistry of a pool</h2>
<p>During a sunny afternoon, algae photosynthesize so quickly that the water becomes supersaturated with oxygen, while at night respiration pushes carbon dioxide up and pH down.</p>
<table><thead><tr><th>Time</th><th>Oxygen</th><th>pH</th></tr></thead><tbody><tr><td>Noon</td><td>High</td><td>8.6</td></tr><tr><td>Midnight</td><td>Low</td><td>7.4</td></tr></tbody></table>
<div data-nosnippet><p>Internal editorial note: this paragraph must never be indexed by the knowledge base.</p></div>
</article>
<aside class="related-articles"><h2>Related articles</h2><ul><li><a href="/a">Ten beaches to visit this summer</a></li><li><a href="/b">Why seagulls steal chips</a></li></ul></aside>
<div class="newsletter"><h3>Subscribe to our newsletter</h3><p>Get the best coastal stories delivered to your inbox every week.</p><form><input type="email"><button>Subscribe</button></form></div>
</main>
<footer><p>Copyright 2024 Coastal Notes. All rights reserved.</p><a href="/privacy">Privacy policy</a></footer>
</body>
</html>
"""


@pytest.fixture(scope="module")
def article() -> Document:
    doc = extract_document(ARTICLE, URL)
    assert doc is not None
    return doc


def _lines(markdown: str) -> list[str]:
    return markdown.split("\n")


def test_headings_come_out_as_hash_lines(article: Document) -> None:
    lines = _lines(article.markdown)
    assert lines[0] == "# How Tide Pools Work"
    for heading in ("## The intertidal zone", "### Upper zone", "## Chemistry of a pool"):
        assert heading in lines
    assert lines.index("## The intertidal zone") < lines.index("### Upper zone") < lines.index("## Chemistry of a pool")


def test_main_content_is_kept_with_lists_and_tables(article: Document) -> None:
    md = article.markdown
    assert "Tide pools are small pockets of seawater" in md
    assert "each band of the shore supports a different community" in md
    assert "- Periwinkles seal their shells to keep moisture in." in _lines(md)
    assert "| Noon | High | 8.6 |" in _lines(md)
    assert re.search(r"^\|\s*-{3,}", md, re.MULTILINE), "table delimiter row"


@pytest.mark.parametrize(
    "boilerplate",
    [
        "cookies",  # cookie banner
        "About us",  # nav
        "Related articles",  # related-articles aside
        "Ten beaches",
        "newsletter",
        "inbox every week",
        "All rights reserved",  # footer
        "Privacy policy",
    ],
)
def test_boilerplate_is_gone(article: Document, boilerplate: str) -> None:
    assert boilerplate.lower() not in article.markdown.lower()


def test_nosnippet_section_is_removed(article: Document) -> None:
    assert "Internal editorial note" not in article.markdown


def test_metadata(article: Document) -> None:
    assert article.url == URL
    assert article.canonical_url == "https://example.org/guides/tide-pools"
    assert article.title == "How Tide Pools Work"
    assert article.description == "A field guide to the life and chemistry of rocky tide pools."
    assert article.author == "Maria Alvarez"
    assert article.published == "2024-03-15"
    assert article.modified == "2024-04-02"
    assert article.language == "en-GB"
    assert {"tide pools", "marine biology", "ecology"} <= set(article.tags)


def test_hash_word_count_and_version(article: Document) -> None:
    assert article.content_hash == hashlib.sha256(article.markdown.encode("utf-8")).hexdigest()
    assert 100 < article.word_count < 250
    assert EXTRACTOR_VERSION.startswith(f"trafilatura-{trafilatura.__version__}+sitekb.")
    with pytest.raises(dataclasses.FrozenInstanceError):
        article.title = "changed"  # type: ignore[misc]


def test_extraction_is_deterministic(article: Document) -> None:
    assert extract_document(ARTICLE, URL) == article


def test_title_is_prepended_when_h1_sits_outside_main_content() -> None:
    html = """<html><head><title>Widget Manual</title></head><body>
<header class="hero"><h1>Widget Manual</h1><nav><a href="/">Home</a></nav></header>
<main><article>
<p>The widget is a small device that converts rotational motion into a steady stream of useful data for your dashboard and alerts.</p>
<h2>Installation</h2>
<p>Mount the widget on a flat surface, connect the power cable and wait for the green light to blink three times before pairing it.</p>
</article></main></body></html>"""
    doc = extract_document(html, "https://example.org/manual")
    assert doc is not None
    lines = _lines(doc.markdown)
    assert lines[0] == "# Widget Manual"
    assert "## Installation" in lines
    assert lines.count("# Widget Manual") == 1
    assert doc.canonical_url is None  # no canonical link or og:url


def test_all_heading_levels_are_kept() -> None:
    sections = "".join(
        f"<h{level}>Level {level} heading</h{level}><p>Paragraph under level {level} with enough words to count as real content for the extractor.</p>"
        for level in range(1, 7)
    )
    html = f"<html><body><article>{sections}</article></body></html>"
    doc = extract_document(html, "https://example.org/levels")
    assert doc is not None
    lines = _lines(doc.markdown)
    for level in range(1, 7):
        assert f"{'#' * level} Level {level} heading" in lines


def test_canonical_forms_and_json_ld_modified_date() -> None:
    html = """<html lang="fr"><head><title>Page</title>
<link rel="canonical" href="//cdn.example.org/fr/page">
<script type="application/ld+json">{"@context": "https://schema.org", "@type": "Article",
 "datePublished": "2023-01-05", "dateModified": "2023-06-30T12:00:00+02:00"}</script>
<script type="application/ld+json">{not json</script>
</head><body><article><p>Un paragraphe assez long pour être considéré comme du contenu principal par l'extracteur de texte.</p>
<p>Un deuxième paragraphe, lui aussi assez long pour que l'extraction ne le considère pas comme du bruit.</p></article></body></html>"""
    doc = extract_document(html, "https://example.org/fr/page?x=1")
    assert doc is not None
    assert doc.canonical_url == "https://cdn.example.org/fr/page"
    assert doc.modified == "2023-06-30"
    assert doc.language == "fr"


@pytest.mark.parametrize("html", ["", "   \n\t ", "<html><body></body></html>"])
def test_no_main_content_gives_none(html: str) -> None:
    assert extract_document(html, "https://example.org/empty") is None


@pytest.mark.parametrize(
    "html",
    [
        "<html><body><div><p>Unclosed paragraph with <b>bold <i>text that never closes <table><tr><td>cell</div></span></body>",
        "<p>a fragment, not a document <div>with a stray div</p></span>",
        "just some plain text, no markup at all, which is not HTML",
        "\x00\x01\x02 binary junk \ufffd\ufffd decoded with the wrong charset Ã©tÃ©",
        "<?xml version='1.0' encoding='utf-8'?><html><body><p>An XML declaration inside an already decoded string, which lxml refuses for str input.</p></body></html>",
        "<html><body>" + "<div>" * 3000 + "deeply nested text " * 30 + "</body></html>",
        "<" * 500,
        "<html><head><link rel='canonical' href='http://[::1'></head><body><p>Broken canonical URL in an otherwise fine page with some longer text in it.</p></body></html>",
    ],
    ids=["unclosed", "fragment", "plain-text", "junk", "xml-decl", "deep", "brackets", "bad-canonical"],
)
def test_malformed_input_does_not_raise(html: str) -> None:
    doc = extract_document(html, "https://example.org/bad")
    assert doc is None or (isinstance(doc, Document) and doc.markdown.strip())


def test_strip_nosnippet_keeps_tail_text_and_other_content() -> None:
    html = "<html><body><p>Visible <span data-nosnippet>SECRET</span>tail stays.</p><div data-nosnippet='true'><p>Hidden block</p></div><p>After.</p></body></html>"
    out = strip_nosnippet(html)
    assert "SECRET" not in out and "Hidden block" not in out
    assert "Visible" in out and "tail stays." in out and "After." in out


def test_strip_nosnippet_custom_selectors_and_passthrough() -> None:
    html = "<html><body><p>Keep</p><div class='ad'>Buy now</div><aside id='promo'>Promo</aside></body></html>"
    out = strip_nosnippet(html, selectors=(".ad", "#promo"))
    assert "Buy now" not in out and "Promo" not in out and "Keep" in out
    assert strip_nosnippet(html) == html  # nothing matched: returned unchanged
    assert strip_nosnippet("") == ""
    with pytest.raises(ValueError, match="invalid CSS selector"):
        strip_nosnippet(html, selectors=("div[",))
