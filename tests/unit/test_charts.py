"""The report's SVG charts, the plain-words verdicts and the pure parts of coverage (no database)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sitekb import coverage
from sitekb.report_html import charts
from sitekb.report_html.verdict import of_run, quarantine_words
from sitekb.store.coverage import PageRow

HOSTILE = '<script>alert(1)</script> & "quoted" </svg><img src=x onerror=alert(2)>'


def parse(svg: str) -> ET.Element:
    """The chart as XML: well-formed, or this fails."""
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("text")]


def test_nice_ticks_are_round_and_reach_the_top():
    assert charts.nice_ticks(100) == [0, 25, 50, 75, 100]
    assert charts.nice_ticks(0.93) == [0, 0.25, 0.5, 0.75, 1.0]
    assert charts.nice_ticks(7) == [0, 2, 4, 6, 8]
    assert charts.nice_ticks(0) == [0, 1]
    for top in (1, 3, 17, 950, 12_345, 0.004):
        ticks = charts.nice_ticks(top)
        assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= 7


def test_numbers_read_as_people_write_them():
    assert [charts.number(v) for v in (0, 950, 1200, 3_400_000)] == ["0", "950", "1.2k", "3.4M"]
    assert charts.dollars(0) == "$0" and charts.dollars(0.0012) == "$0.0012" and charts.dollars(12.5) == "$12.50"


def test_a_bar_chart_has_a_title_a_description_axes_bars_and_a_legend():
    svg = charts.bar_chart("c1", "Spend per run", ["run a", "run b"],
                           [charts.Series("USD", [0.5, 1.25], labels=["$0.50", "$1.25"]),
                            charts.Series("budget", [1, 1], charts.ORANGE)],
                           y_label="USD", desc="two runs", value_format=charts.dollars)
    root = parse(svg)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c1-title c1-desc"
    assert root.find("title").text == "Spend per run" and root.find("desc").text == "two runs"
    assert int(root.get("width")) > 0 and int(root.get("height")) > 0
    bars = [r for r in root.iter("rect") if r.get("class") == "bar"]
    assert len(bars) == 4 and all(float(b.get("height")) > 0 for b in bars)
    # The taller value makes the taller bar.
    assert float(bars[2].get("height")) > float(bars[0].get("height"))
    words = texts(root)
    assert {"Spend per run", "USD", "budget", "$1.25", "run a", "run b"} <= set(words)
    assert any(w.startswith("$") for w in words if w not in ("$0.50", "$1.25"))   # the axis ticks


def test_hostile_labels_are_text_not_markup():
    svg = charts.hbar_chart("c2", HOSTILE, [(HOSTILE, 0.7, HOSTILE)], x_label="share", desc=HOSTILE,
                            max_value=1, threshold=0.6)
    root = parse(svg)
    assert root.find("title").text == HOSTILE
    assert not list(root.iter("script")) and not list(root.iter("img"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    table = charts.data_table(HOSTILE, ["a"], [[HOSTILE]])
    assert "<script>" not in table and "<img" not in table


def test_a_share_beyond_the_limit_is_drawn_in_the_warning_colour_with_the_limit_line():
    root = parse(charts.hbar_chart("c3", "Sections", [("/blog/", 0.8, ""), ("/", 0.2, "")], x_label="share",
                                   desc="d", max_value=1.0, threshold=0.6, threshold_label="limit 60%"))
    bars = [r for r in root.iter("rect") if r.get("class") == "bar"]
    assert [b.get("fill") for b in bars] == [charts.ORANGE, charts.BLUE]
    assert float(bars[0].get("width")) == pytest.approx(4 * float(bars[1].get("width")), rel=0.01)
    assert [ln for ln in root.iter("line") if ln.get("class") == "threshold"]
    assert "limit 60%" in texts(root)


def test_the_timeline_colours_each_snapshot_by_its_fate_and_plots_the_golden_score():
    points = [charts.TimelinePoint("#1", "05-01", "retired", 40, 300, 1.0, "8/8"),
              charts.TimelinePoint("#2", "05-02", "rejected", 28, 210, 0.5, "4/8"),
              charts.TimelinePoint("#3", "05-03", "published", 41, 305, None)]
    root = parse(charts.timeline_chart("t", "Timeline", points, desc="three snapshots"))
    bars = [r for r in root.iter("rect") if r.get("class") == "bar"]
    assert len(bars) == 6   # pages and chunks of each
    assert [b.get("fill") for b in bars[:3]] == [charts.STATE_COLOURS[s] for s in ("retired", "rejected", "published")]
    dots = [c for c in root.iter("circle") if c.get("class") == "dot"]
    assert len(dots) == 2 and float(dots[1].get("cy")) > float(dots[0].get("cy"))   # 50% sits below 100%
    words = texts(root)
    assert {"#1", "#2", "#3", "rejected", "published (live)", "golden score", "8/8", "4/8"} <= set(words)


def test_verdicts_say_what_decided_the_run():
    published = {"status": "succeeded", "snapshot_state": "published", "aliases": ["production"],
                 "stages": {"evaluate": {"golden": {"hits": 8, "asked": 8}},
                            "validate": {"quarantined_urls": {"/a": ["min_words"], "/b": ["min_words"]}}}}
    assert of_run(published).text == ("Published to production: 8 of 8 golden questions answered; "
                                      "2 pages quarantined for thin content.")
    rejected = {"status": "blocked", "snapshot_state": "rejected",
                "stages": {"evaluate": {"failures": ["pages fell from 40 to 28 (31% drop, limit 20%) against the "
                                                     "live snapshot"]}}}
    verdict = of_run(rejected)
    assert verdict.tone == "rejected"
    assert verdict.text == ("Rejected: pages fell from 40 to 28 (31% drop, limit 20%) against the live snapshot. "
                            "The live snapshot stayed.")
    failed = of_run({"status": "failed", "error": "crawl: the start URL answered 503\nmore", "stages": {}})
    assert failed.tone == "failed" and "the start URL answered 503" in failed.text and "more" not in failed.text
    owner = of_run({"status": "succeeded", "snapshot_state": "rejected", "stages": {},
                    "snapshot_reasons": [{"check": "approval", "message": "rejected by ann: prices are wrong"}]})
    assert owner.text.startswith("Rejected by a content owner: rejected by ann: prices are wrong")
    assert quarantine_words({"/a": ["min_words", "boilerplate"], "/b": ["transcript_noise"]}) == \
        "2 pages quarantined (1 for being mostly navigation or boilerplate, 1 for thin content, " \
        "1 for a noisy automatic transcript)"


def test_a_section_is_the_first_folder_of_the_path():
    assert coverage.section_of("https://x.test/blog/2024/post.html") == "/blog/"
    assert coverage.section_of("https://x.test/docs/") == "/docs/"
    assert coverage.section_of("https://x.test/about.html") == "/"
    assert coverage.section_of("https://x.test/pricing?plan=a") == "/"
    assert coverage.section_of("https://x.test") == "/"


def test_the_cluster_count_grows_with_the_chunks_up_to_eight():
    assert [coverage.cluster_count(n) for n in (0, 1, 2, 8, 50, 128, 100_000)] == [0, 1, 1, 2, 5, 8, 8]


def test_kmeans_finds_separated_groups_and_is_deterministic():
    rng = np.random.default_rng(1)
    centres = np.eye(6)[:3] * 10
    points = np.vstack([c + rng.normal(0, 0.5, (40, 6)) for c in centres])
    c1, labels1 = coverage.kmeans(points, 3)
    c2, labels2 = coverage.kmeans(points, 3)
    assert np.array_equal(labels1, labels2) and np.allclose(c1, c2)
    for group in range(3):   # each true group is one cluster
        assert len(set(labels1[group * 40:(group + 1) * 40])) == 1
    assert len(set(labels1)) == 3
    same, labels = coverage.kmeans(np.ones((5, 3)), 4)
    assert len(same) == 1 and set(labels) == {0}


def test_cluster_labels_are_the_distinctive_words_not_the_common_ones():
    pricing = [coverage.words(t) for t in ("Pricing plans: seats cost $10 per seat per month for the marketing team",
                                           "Annual pricing plans give two free seats to the marketing team",
                                           "Enterprise pricing: plans with unlimited seats for marketing")]
    email = [coverage.words(t) for t in ("Email deliverability: authenticate with SPF and DKIM for marketing",
                                         "Keep the spam complaint rate low; deliverability depends on it",
                                         "Warm up a new sending domain to protect deliverability and spam score")]
    labels = coverage.label_terms([pricing, email])
    assert set(labels[0]) == {"pricing", "plans", "seats"}
    assert "deliverability" in labels[1] and "spam" in labels[1]
    assert "marketing" not in labels[0] and "the" not in coverage.words("the team's plan")


def test_a_section_above_the_limit_is_a_warning():
    pages = [PageRow("https://x.test/blog/a", "en", ["news"], 7), PageRow("https://x.test/blog/b", "en", [], 1),
             PageRow("https://x.test/about", "de", ["company", "news"], 2)]
    record = coverage.summarize(pages, [], max_section_share=0.6, snapshot_id=3, site="x")
    assert record["sections"] == [{"name": "/blog/", "chunks": 8, "share": 0.8, "pages": 2},
                                  {"name": "/", "chunks": 2, "share": 0.2, "pages": 1}]
    assert {t["name"]: t["share"] for t in record["tags"]} == {"news": 0.9, "company": 0.2, "(untagged)": 0.1}
    assert {r["name"]: r["chunks"] for r in record["languages"]} == {"en": 8, "de": 2}
    (warning,) = record["warnings"]
    assert "section /blog/ holds 80% of the chunks" in warning and "60% limit" in warning
    assert coverage.summarize(pages, [], max_section_share=0.8)["warnings"] == []
    assert "WARNING section /blog/" in coverage.format_coverage(record)
