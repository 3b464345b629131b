"""Extraction quality on hand-written pages: precision, recall and F1 over word n-grams.

``tests/benchmarks/extraction_pages/NN-name.html`` is a page with varied
boilerplate (cookie banners at the top or the end, navigation, breadcrumbs,
share bars, related stories inside and outside the article, newsletter boxes
inside the article, comments, author boxes, ads, docs sidebars, footers);
``NN-name.txt`` is the main content a reader would want in the knowledge base,
one block per line. Scores compare multisets of lowercase word n-grams, so
markdown markers and line breaks do not count, but order within n words does.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAGES = Path(__file__).resolve().parent / "extraction_pages"
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float


def pages() -> list[tuple[str, str, str]]:
    """(name, html, expected text) of every fixture page, in order."""
    return [(p.stem, p.read_text(encoding="utf-8"), p.with_suffix(".txt").read_text(encoding="utf-8"))
            for p in sorted(PAGES.glob("*.html"))]


def ngrams(text: str, n: int) -> Counter:
    words = [w.lower() for w in _WORD.findall(text or "")]
    return Counter(tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1)))


def score(extracted: str, expected: str, n: int) -> Score:
    got, want = ngrams(extracted, n), ngrams(expected, n)
    overlap = sum((got & want).values())
    precision = overlap / sum(got.values()) if got else 0.0
    recall = overlap / sum(want.values()) if want else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1)


def evaluate(extract: Callable[[str, str], str], n: int) -> dict:
    """Micro-averaged scores (n-grams pooled over all pages) and per-page F1 of one extractor."""
    got_total = want_total = overlap_total = 0
    per_page = {}
    for name, html, expected in pages():
        text = extract(html, f"https://fixtures.example/{name}") or ""
        got, want = ngrams(text, n), ngrams(expected, n)
        overlap = sum((got & want).values())
        got_total, want_total, overlap_total = got_total + sum(got.values()), want_total + sum(want.values()), \
            overlap_total + overlap
        per_page[name] = round(score(text, expected, n).f1, 4)
    precision = overlap_total / got_total if got_total else 0.0
    recall = overlap_total / want_total if want_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "pages": per_page}


def sitekb_text(html: str, url: str) -> str:
    from sitekb.extract import extract_document

    doc = extract_document(html, url)
    return doc.markdown if doc else ""


def trafilatura_default_text(html: str, url: str) -> str:
    import trafilatura

    return trafilatura.extract(html, url=url) or ""
