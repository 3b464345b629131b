"""Extraction quality on hand-written and real pages: precision, recall and F1 over word n-grams.

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


# --- real pages: the Zyte/ScrapingHub article-extraction-benchmark ---------------
#
# 181 real news and blog pages with hand-checked article bodies (MIT licence), read
# from a git mirror at benchmark time rather than copied into this repository.
# $SITEKB_ARTICLE_BENCHMARK names the mirror's git directory (or a checkout);
# absent, the real-page benchmark skips.

ARTICLE_BENCHMARK_REPO = "scrapinghub/article-extraction-benchmark"
DEFAULT_ARTICLE_BENCHMARK = Path("/work/.mirror/scrapinghub+article-extraction-benchmark/repo")
_SHINGLE_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class RealPage:
    key: str
    url: str
    html: str
    article_body: str


def article_benchmark_dir() -> Path | None:
    """Where the article-extraction-benchmark is: a git directory or a checkout; None when absent."""
    import os

    folder = Path(os.environ.get("SITEKB_ARTICLE_BENCHMARK") or DEFAULT_ARTICLE_BENCHMARK)
    return folder if folder.exists() else None


def real_pages(folder: Path | None = None) -> list[RealPage]:
    """Every page of the article-extraction-benchmark with its ground-truth article body, sorted by key."""
    import gzip
    import json
    import subprocess

    folder = folder or article_benchmark_dir()
    if folder is None:
        return []
    if (folder / "ground-truth.json").exists():  # a checkout
        truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
        blobs = {key: (folder / "html" / f"{key}.html.gz").read_bytes() for key in truth}
    else:  # a bare git directory (what the mirror holds): one `git cat-file --batch` for every file
        git = ["git", "--git-dir", str(folder)]
        truth = json.loads(subprocess.run(git + ["show", "HEAD:ground-truth.json"], capture_output=True,
                                          check=True).stdout)
        names = [f"HEAD:html/{key}.html.gz" for key in truth]
        out = subprocess.run(git + ["cat-file", "--batch"], input="\n".join(names).encode() + b"\n",
                             capture_output=True, check=True).stdout
        blobs, at = {}, 0
        for key in truth:
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split()[2])
            blobs[key] = out[header_end + 1 : header_end + 1 + size]
            at = header_end + 1 + size + 1
    return [RealPage(key, truth[key].get("url") or f"https://article-benchmark.example/{key}",
                     gzip.decompress(blobs[key]).decode("utf-8"), truth[key].get("articleBody") or "")
            for key in sorted(truth)]


def _shingles(text: str, n: int = 4) -> Counter:
    tokens = _SHINGLE_TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i : i + n])


def shingle_match(extracted: str, expected: str, n: int = 4) -> tuple[float, float, float]:
    """(tp, fp, fn) over word 4-gram shingles, normalised to sum 1 per page: the benchmark's evaluate.py."""
    got, want = _shingles(extracted, n), _shingles(expected, n)
    tp = sum((got & want).values())
    fp = sum((got - want).values())
    fn = sum((want - got).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _ratio(part: float, other: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return part / (part + other) if part + other else 0.0


def shingle_scores(matches: list[tuple[float, float, float]]) -> Score:
    """The benchmark's macro scores: mean precision and mean recall over pages, and F1 of the two means."""
    precisions = [_ratio(tp, fp, fp, fn) for tp, fp, fn in matches if tp + fp > 0]
    recalls = [_ratio(tp, fn, fp, fn) for tp, fp, fn in matches if tp + fn > 0]
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1)


def body_without_title(markdown: str, title: str | None) -> str:
    """``markdown`` without a first '# title' line: the benchmark's article bodies leave the headline out."""
    first, _, rest = markdown.partition("\n")
    if title and first.lstrip("# ").strip() == title.strip() and first.startswith("#"):
        return rest.lstrip("\n")
    return markdown


def evaluate_real(extract: Callable[[str, str], str], real: list[RealPage]) -> dict:
    """The benchmark's scores of one extractor on the real pages, and the pages whose article it lost.

    A page is lost when the extraction holds under a tenth of its article's shingles
    (nothing at all, or some other block of the page instead of the article).
    """
    matches, per_page, lost = [], {}, []
    for page in real:
        text = extract(page.html, page.url) or ""
        match = shingle_match(text, page.article_body)
        matches.append(match)
        per_page[page.key] = round(shingle_scores([match]).f1, 4)
        if page.article_body.strip() and shingle_scores([match]).recall < 0.1:
            lost.append(page.key)
    total = shingle_scores(matches)
    return {"precision": round(total.precision, 4), "recall": round(total.recall, 4), "f1": round(total.f1, 4),
            "lost_pages": lost, "pages": per_page}


def trafilatura_text(favor_precision: bool) -> Callable[[str, str], str]:
    """trafilatura.extract as the benchmark runs it (its run_trafilatura.py), optionally favouring precision."""
    def extract(html: str, url: str) -> str:
        import trafilatura

        return trafilatura.extract(html, include_comments=False, favor_precision=favor_precision) or ""
    return extract


# --- real pages: the Python documentation dev set --------------------------------
#
# 497 real Sphinx pages with no hand-made gold; the main content is the page's
# <div class="body" role="main"> (nav bars, sidebars and footers are outside it),
# so its text, without the <h1> and the '¶' header links, serves as the gold.

DEFAULT_PYDOCS_SITE = Path("/work/shared/devsets/pydocs/site")


def pydocs_pages(folder: Path | None = None) -> list[RealPage]:
    """Every page of the Python docs dev set with the text of its div.body as the article; [] when absent."""
    import os

    import lxml.html

    folder = folder or Path(os.environ.get("SITEKB_PYDOCS_SITE") or DEFAULT_PYDOCS_SITE)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*.html")):
        html = path.read_text(encoding="utf-8", errors="replace")
        main = lxml.html.document_fromstring(html).xpath("//div[@role='main']")
        if not main:
            continue
        for junk in main[0].xpath(".//h1 | .//a[@class='headerlink'] | .//script | .//style"):
            junk.drop_tree()
        relative = path.relative_to(folder).as_posix()
        found.append(RealPage(relative, f"https://docs.python.org/3/{relative}", html,
                              " ".join(main[0].text_content().split())))
    return found
