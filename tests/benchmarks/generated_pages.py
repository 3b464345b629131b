"""A generated site of many small pages, written as HTML files to serve on 127.0.0.1 (issue 13's rebuild benchmark).

Its text is real prose: the sentences of the pydocs development site's
paragraphs, drawn at random (seeded) into pages of a few paragraphs each, so
no two pages are near duplicates and the extraction, quality checks and
chunker read ordinary documentation text. The site is laid out in sections of
``PER_SECTION`` pages: the home page links to every section index, and each
section index to its pages, two link hops from the start URL. Every page has
the same header, navigation and footer around its article, as a real site's
template would.
"""

from __future__ import annotations

import html
import random
import re
from pathlib import Path

PER_SECTION = 100
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentence_pool(site_dir: Path) -> list[str]:
    """The sentences of the paragraphs of the HTML pages under ``site_dir`` (at least 8 words each), deduplicated."""
    import lxml.html

    seen: dict[str, None] = {}
    for path in sorted(site_dir.rglob("*.html")):
        tree = lxml.html.fromstring(path.read_bytes())
        for p in tree.iter("p"):
            text = " ".join(p.text_content().split())
            for sentence in _SENTENCE.split(text):
                if len(sentence.split()) >= 8 and sentence[-1:] in ".!?":
                    seen.setdefault(sentence, None)
    return list(seen)


def section_of(page: int) -> str:
    return f"section{page // PER_SECTION:03d}"


def write_site(out: Path, pages: int, pool: list[str], *, seed: int = 13) -> list[Path]:
    """Write ``pages`` article pages (and their section indexes and home page) under ``out``; their paths."""
    rng = random.Random(seed)
    sections = sorted({section_of(i) for i in range(pages)})
    _write(out / "index.html", "Generated documentation", "".join(
        f'<li><a href="{s}/index.html">{s}</a></li>' for s in sections), intro=pool[0])
    written = []
    for section in sections:
        members = [i for i in range(pages) if section_of(i) == section]
        _write(out / section / "index.html", f"Section {section}", "".join(
            f'<li><a href="page{i:05d}.html">Page {i}</a></li>' for i in members), intro=rng.choice(pool))
        for i in members:
            words = rng.sample(pool, rng.randint(12, 24))
            title = " ".join(words[0].split()[:6]).rstrip(",.;:")
            cuts = sorted(rng.sample(range(1, len(words)), 3))
            paragraphs = [words[a:b] for a, b in zip([0, *cuts], [*cuts, len(words)])]
            body = "".join(
                (f"<h2>Part {n}</h2>" if n else "") + "<p>" + " ".join(html.escape(s) for s in para) + "</p>"
                for n, para in enumerate(paragraphs))
            path = out / section / f"page{i:05d}.html"
            _write(path, f"{title} ({i})", body, article=True)
            written.append(path)
    return written


def _write(path: Path, title: str, body: str, *, intro: str = "", article: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    main = (f"<article><h1>{html.escape(title)}</h1>{body}</article>" if article
            else f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><ul>{body}</ul>")
    path.write_text(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head><body>"
        "<header><a href=\"/index.html\">Generated docs</a></header>"
        "<nav><a href=\"/index.html\">Home</a> | <a href=\"/section000/index.html\">First section</a></nav>"
        f"<main>{main}</main>"
        "<footer>Copyright the generated documentation authors. All rights reserved.</footer>"
        "</body></html>", encoding="utf-8")
