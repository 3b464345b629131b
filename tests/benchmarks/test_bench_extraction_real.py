"""Extraction quality on real pages: sitekb's configurations against trafilatura's.

The 181 real news and blog pages of the Zyte/ScrapingHub article-extraction-benchmark
(ground-truth article bodies, MIT licence) are read from a git mirror at run time
(extraction_eval.real_pages; $SITEKB_ARTICLE_BENCHMARK, skipped when absent) and
scored the way that benchmark's evaluate.py does: word 4-gram shingles, precision and
recall averaged over pages, F1 of the two. sitekb's markdown is scored without the
'# title' line it leads with (the benchmark's bodies leave the headline out).

Measured per configuration: sitekb's defaults, without boilerplate pruning, with
each rule family of extract.BOILERPLATE_RULES left out of (or added to) the
defaults, in recall mode, and trafilatura.extract with its defaults and with
favor_precision, plus the pages each loses (under a tenth of the article kept) and
how often sitekb fell back to a second extraction. The hand-written pages
(extraction_pages/) are scored per family too, with word trigrams, and the 497 real
Sphinx pages of the Python docs dev set (extraction_eval.pydocs_pages: the text of
div.body as the gold) with the same shingles, for sitekb with and without pruning
and trafilatura with favor_precision.

Results: bench-results/extraction_real.json.
"""

from __future__ import annotations

from collections import Counter

import pytest

from sitekb.extract import BOILERPLATE_RULES, DEFAULT_BOILERPLATE_RULES, extract_document
from tests.benchmarks import extraction_eval
from tests.benchmarks.results import write_result


def _sitekb(fallbacks: Counter | None = None, *, keep_title: bool = False, **options):
    def extract(html: str, url: str) -> str:
        doc = extract_document(html, url, **options)
        if doc is None:
            return ""
        if fallbacks is not None:
            fallbacks.update(doc.fallbacks)
        # The hand-written pages' gold starts with the title; the real pages' golds leave it out.
        return doc.markdown if keep_title else extraction_eval.body_without_title(doc.markdown, doc.title)
    return extract


def configurations() -> dict[str, dict]:
    """name -> extract_document options; the trafilatura baselines are added by the benchmark."""
    configs: dict[str, dict] = {"sitekb": {}, "sitekb_without_pruning": {"prune_boilerplate": False},
                                "sitekb_favor_recall": {"favor_precision": False}}
    for family in BOILERPLATE_RULES:
        if family in DEFAULT_BOILERPLATE_RULES:
            rules = [f for f in DEFAULT_BOILERPLATE_RULES if f != family]
            configs[f"sitekb_without_{family}"] = {"prune_boilerplate": rules}
        else:
            configs[f"sitekb_with_{family}"] = {"prune_boilerplate": [*DEFAULT_BOILERPLATE_RULES, family]}
    configs["sitekb_all_families"] = {"prune_boilerplate": list(BOILERPLATE_RULES)}
    return configs


@pytest.mark.timeout(3600)
def test_extraction_on_real_pages():
    real = extraction_eval.real_pages()
    if not real:
        pytest.skip(f"{extraction_eval.ARTICLE_BENCHMARK_REPO} not found: set SITEKB_ARTICLE_BENCHMARK "
                    "to a clone (or its git directory)")
    results: dict[str, dict] = {}
    fallbacks: dict[str, dict] = {}
    hand_written: dict[str, float] = {}
    for name, options in configurations().items():
        used: Counter = Counter()
        results[name] = extraction_eval.evaluate_real(_sitekb(used, **options), real)
        fallbacks[name] = dict(used)
        hand_written[name] = extraction_eval.evaluate(_sitekb(keep_title=True, **options), 3)["f1"]
    baselines = {name: extraction_eval.trafilatura_text(precise)
                 for name, precise in (("trafilatura_defaults", False), ("trafilatura_favor_precision", True))}
    for name, extract in baselines.items():
        results[name] = extraction_eval.evaluate_real(extract, real)
    docs = extraction_eval.pydocs_pages()
    pydocs: dict[str, dict] = {}
    if docs:
        # Sphinx pages are long: the main configurations only.
        main = {name: _sitekb(**configurations()[name]) for name in ("sitekb", "sitekb_without_pruning")}
        for name, extract in {**main, "trafilatura_favor_precision": baselines["trafilatura_favor_precision"]}.items():
            pydocs[name] = extraction_eval.evaluate_real(extract, docs)

    sitekb = results["sitekb"]
    # The article is never lost to pruning: nothing lost without pruning is lost with it.
    assert set(sitekb["lost_pages"]) <= set(results["sitekb_without_pruning"]["lost_pages"])
    assert sitekb["f1"] >= results["sitekb_without_pruning"]["f1"]

    def line(name: str) -> str:
        r = results[name]
        return (f"{name}: F1 {r['f1']:.4f} (P {r['precision']:.4f} R {r['recall']:.4f}), "
                f"{len(r['lost_pages'])} pages lost")

    summary = [f"{len(real)} real pages of {extraction_eval.ARTICLE_BENCHMARK_REPO}, word 4-gram shingles "
               "(its evaluate.py), title left out"]
    summary += [line(name) for name in results]
    summary.append("fallbacks of sitekb's defaults: " + (", ".join(f"{k} {v}" for k, v in fallbacks["sitekb"].items())
                                                       or "none"))
    if pydocs:
        summary.append(f"{len(docs)} Python docs pages (gold: div.body text), shingle F1: "
                       + ", ".join(f"{k} {v['f1']:.4f} ({len(v['lost_pages'])} lost)" for k, v in pydocs.items()))
    summary.append("hand-written pages, word-trigram F1: " + ", ".join(f"{k} {v:.4f}" for k, v in hand_written.items()))
    write_result("extraction_real", {
        "source": {"repo": extraction_eval.ARTICLE_BENCHMARK_REPO, "pages": len(real),
                   "metric": "word 4-gram shingles, macro precision/recall, title left out"},
        "default_rule_families": list(DEFAULT_BOILERPLATE_RULES),
        "real_pages": results, "fallbacks": fallbacks, "hand_written_trigram_f1": hand_written,
        "pydocs_pages": {name: {k: v for k, v in r.items() if k != "pages"} for name, r in pydocs.items()},
    }, summary)
