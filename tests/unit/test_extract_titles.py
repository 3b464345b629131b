"""Titles and headings leave extraction as plain text: no tags, entities decoded, spaces collapsed.

Before, markup in a <title> or a heading (entity-encoded or not) was stored as it
was and only stripped when a search result was built (sitekb.passages.Passage);
the stored document, the chunks' heading paths and their embed text held it.
"""

from __future__ import annotations

from sitekb.chunking import ChunkingConfig, chunk_document
from sitekb.extract import extract_document, plain_heading, text_document
from sitekb.tokenization import get_tokenizer

URL = "https://example.org/help/setup"
PROSE = ("The setup guide explains how the team creates the workspace, connects the billing account and "
         "invites every colleague who needs access to the shared reports.")


def page(title: str, heading: str = "Install", h1: str | None = None) -> str:
    top = f"<h1>{h1}</h1>" if h1 is not None else ""
    return (f"<html lang='en'><head><title>{title}</title></head><body><main><article>{top}"
            f"<p>{PROSE} {PROSE}</p><h2>{heading}</h2><p>{PROSE}</p><p>{PROSE}</p></article></main></body></html>")


def test_an_entity_encoded_tag_in_the_title_is_stripped():
    doc = extract_document(page("Setup &lt;img src=x onerror=alert(1)&gt; guide"), URL)
    assert doc.title == "Setup guide"
    assert doc.markdown.startswith("# Setup guide\n")
    assert "onerror" not in doc.markdown and "<" not in doc.markdown


def test_a_title_of_nothing_but_markup_is_no_title():
    doc = extract_document(page("&lt;script&gt;alert(1)&lt;/script&gt;"), URL)
    assert doc.title is None


def test_headings_lose_tags_entities_emphasis_and_extra_spaces():
    heading = "&lt;b&gt;Install&lt;/b&gt;   on <em>Linux</em> &amp; <code>macOS</code>"
    doc = extract_document(page("Setup", heading=heading, h1="Setup   <strong>guide</strong>"), URL)
    lines = [line for line in doc.markdown.split("\n") if line.startswith("#")]
    assert lines == ["# Setup guide", "## Install on Linux & macOS"]


def test_a_script_in_a_heading_leaves_no_trace():
    doc = extract_document(page("Setup", heading="&lt;script&gt;alert(1)&lt;/script&gt;Install"), URL)
    assert "## Install" in doc.markdown.split("\n")
    assert "alert" not in doc.markdown


def test_heading_paths_and_embed_text_of_chunks_are_plain():
    heading = "&lt;a href=x&gt;Install&lt;/a&gt; <b>now</b>"
    doc = extract_document(page("Setup &lt;i&gt;guide&lt;/i&gt;", heading=heading), URL)
    tokenizer = get_tokenizer("openai", "text-embedding-3-small")
    chunks = chunk_document(doc.markdown, url=URL, title=doc.title, tokenizer=tokenizer,
                            config=ChunkingConfig(target_tokens=60))
    paths = {chunk.heading_path for chunk in chunks}
    assert ("Setup guide", "Install now") in paths
    assert all("<" not in chunk.embed_text and "&lt;" not in chunk.embed_text for chunk in chunks)


def test_plain_heading_keeps_ordinary_text():
    assert plain_heading("a < b and c > d") == "a < b and c > d"
    assert plain_heading("The __init__ method and 2 * 3 * 4") == "The __init__ method and 2 * 3 * 4"
    assert plain_heading("AT&amp;T  \n plans") == "AT&T plans"
    assert plain_heading("  ") is None and plain_heading(None) is None


def test_code_comment_lines_keep_their_spacing():
    # trafilatura renders a code block's '# comment' lines without a fence: only markup changes a line.
    html = ("<html><body><article>" + f"<p>{PROSE}</p>" * 2 +
            "<pre># keep  these   spaces\nx = 1</pre>" + f"<p>{PROSE}</p></article></body></html>")
    doc = extract_document(html, URL)
    assert "# keep  these   spaces" in doc.markdown


def test_a_pdf_title_line_is_plain_too():
    doc = text_document("# Annual &lt;b&gt;report&lt;/b&gt;\n\n" + PROSE, "https://example.org/r.pdf")
    assert doc.title == "Annual report" and doc.markdown.startswith("# Annual report\n")
