"""Each document and batch check on crafted documents, judged in plain Python.

The same checks run through Great Expectations in the pipeline;
test_quality_gx.py holds the two engines to the same verdicts.
"""

from __future__ import annotations

import pytest

from sitekb.quality import measures, suites
from sitekb.quality.checks import Failure
from sitekb.sites import QualityConfig

CONFIG = QualityConfig()

ARTICLE = (
    "# Lead routing rules\n\n"
    "Lead routing decides which rep gets a new lead and how fast. A good rule set is short, written down, "
    "and owned by one person in marketing operations. It should route by territory first, then by segment, "
    "and fall back to a round robin when nothing matches.\n\n"
    "## Territories\n\n"
    "Assign every country and every US state to exactly one territory. Review the map each quarter with the "
    "sales leaders, because headcount changes faster than the rules do. When a rep leaves, their leads go back "
    "to the queue within one business day.\n\n"
    "## Service levels\n\n"
    "A demo request must reach a rep within five minutes during business hours. Track the median and the "
    "slowest tenth of responses, and publish both on the weekly dashboard so that nobody is surprised."
)

# An automatic transcript as speech-to-text services emit it: timestamps, fillers,
# stutters, [inaudible], no sentence punctuation.
NOISY_TRANSCRIPT = (
    "# Webinar recording: pipeline reviews\n\n"
    "[00:00:02] okay um so I think we're we're live now can everyone hear me uh just put something in the chat "
    "if you can hear me okay great I see some hellos great great\n\n"
    "[00:00:35] so um welcome to uh pipeline reviews that don't waste everyone's time I'm Dana I run uh the the "
    "revenue operations team and today we're going to talk about you know how to how to run a pipeline review "
    "that actually like changes what people do\n\n"
    "[00:01:20] so first um housekeeping uh the recording will go out after the session so you don't need to "
    "you know take notes and uh questions go in the Q and A box not the chat [inaudible] okay\n\n"
    "[00:02:14] so the the first thing is um stage definitions you know if stage two means different things to "
    "different reps then uh then the review is is kind of meaningless right so um write them down and and "
    "make them like observable you know\n\n"
    "[00:03:40] uh someone is asking about um forecasting categories yes yes we'll get to that uh in a few "
    "minutes hold that thought [crosstalk] sorry I think my my slides are frozen can can everyone still see "
    "them okay okay good"
)

# The same webinar after an editor cleaned it up: speakers, sentences, no fillers.
EDITED_TRANSCRIPT = (
    "# Transcript: pipeline reviews\n\n"
    "Dana: Welcome to pipeline reviews that don't waste everyone's time. I run the revenue operations team, "
    "and today we will talk about running a pipeline review that changes what people do.\n\n"
    "Dana: First, housekeeping. The recording will go out after the session, so you don't need to take notes. "
    "Please put questions in the Q&A box rather than the chat.\n\n"
    "Dana: The first thing is stage definitions. If stage two means different things to different reps, the "
    "review is meaningless. Write the definitions down and make every exit criterion observable.\n\n"
    "Sam: What about forecasting categories? Dana: We will cover them in a few minutes, after the stage "
    "definitions, because categories only work once the stages are agreed."
)

GERMAN = (
    "# Lead-Routing\n\nDas Lead-Routing entscheidet, welcher Vertriebsmitarbeiter einen neuen Lead bekommt und "
    "wie schnell. Die Regeln sind kurz, sie werden aufgeschrieben und von einer Person im Marketing betreut. "
    "Zuerst wird nach Gebiet geroutet, dann nach Segment, und wenn nichts passt, wird der Lead reihum verteilt. "
    "Jedes Land und jedes Bundesland gehört zu genau einem Gebiet. Die Karte wird jedes Quartal mit der "
    "Vertriebsleitung geprüft, denn das Team ändert sich schneller als die Regeln. Eine Demo-Anfrage muss in "
    "fünf Minuten bei einem Mitarbeiter sein, und auch die langsamsten Antworten werden auf dem Dashboard gezeigt."
)


def doc(markdown: str = ARTICLE, **fields) -> dict:
    return {"url": "https://example.org/a", "title": "Lead routing rules", "markdown": markdown,
            "word_count": measures.word_count(markdown), "language": "en", **fields}


def checks(document: dict, config: QualityConfig = CONFIG) -> dict[str, Failure]:
    return {f.check: f for f in suites.check_document(document, config)}


def test_a_clean_article_passes_every_check():
    assert checks(doc()) == {}


def test_missing_or_blank_title_fails():
    assert "title" in checks(doc(title=None))
    assert "title" in checks(doc(title="   "))


def test_thin_page_fails_min_words_with_its_count():
    failure = checks(doc("# Tag: martech\n\nCDP checklist. Vendor renewals."))["min_words"]
    assert failure.value == 6 and failure.threshold == 80
    assert "only 6 words" in failure.message


def test_word_count_above_the_maximum_fails():
    failure = checks(doc(), QualityConfig(min_words=10, max_words=100))["max_words"]
    assert failure.value > 100 and failure.threshold == 100


def test_language_is_detected_even_when_the_page_claims_english():
    failure = checks(doc(GERMAN, language="en"))["language"]
    assert failure.value == "de" and failure.threshold == "en"
    assert "declared 'en'" in failure.message
    assert checks(doc(GERMAN, language="de"), QualityConfig(languages=["en", "de"])) == {}


def test_language_falls_back_to_the_declared_one_on_short_text():
    short = "# Hi\n\nKurz."
    assert measures.measure_document(doc(short, language="fr-CA"))["language"] == "fr"
    assert measures.detect_language(short) == (None, 0.0)


@pytest.mark.parametrize("damage", ["\ufffd" * 30, "Ã©tÃ© " * 10, "\x00\x01\x02" * 10])
def test_encoding_damage_fails(damage: str):
    failure = checks(doc(ARTICLE + "\n\n" + damage))["encoding"]
    assert failure.value > CONFIG.max_bad_char_ratio


def test_a_few_accents_are_not_damage():
    assert measures.bad_char_ratio("Café, naïve, Zürich, São Paulo — “quotes” and ‘apostrophes’.") == 0


def test_boilerplate_share_fails_when_content_is_a_sliver_of_the_page():
    words = measures.word_count(ARTICLE)
    failure = checks(doc(visible_words=words * 20))["boilerplate"]
    assert failure.value == pytest.approx(0.95, abs=0.001)
    assert checks(doc(visible_words=int(words * 1.5))) == {}
    assert measures.measure_document(doc())["boilerplate_share"] is None  # unknown: not judged


def test_noisy_automatic_transcript_fails_with_its_score():
    row = measures.measure_document(doc(NOISY_TRANSCRIPT))
    assert row["looks_like_transcript"]
    failure = checks(doc(NOISY_TRANSCRIPT))["transcript_noise"]
    assert failure.value == row["transcript_noise"] > CONFIG.max_transcript_noise
    assert "noise score" in failure.message


def test_edited_transcript_passes_and_prose_is_not_scored():
    edited = measures.measure_document(doc(EDITED_TRANSCRIPT))
    assert edited["looks_like_transcript"] and edited["transcript_noise"] < CONFIG.max_transcript_noise
    assert "transcript_noise" not in checks(doc(EDITED_TRANSCRIPT))
    assert measures.measure_document(doc())["transcript_noise"] is None


def test_noise_score_orders_noisy_above_edited_above_prose():
    assert measures.transcript_noise(NOISY_TRANSCRIPT) > 0.5 > 0.1 > measures.transcript_noise(EDITED_TRANSCRIPT)
    assert measures.transcript_noise(ARTICLE) < 0.1


def test_duplicate_flags_are_judged_from_the_row():
    row = {**measures.measure_document(doc()), "near_duplicate_of": "https://example.org/original",
           "similarity": 0.93, "duplicate_of": None}
    failures = [f for c in suites.document_checks(CONFIG) if (f := c.judge(row))]
    assert [f.check for f in failures] == ["near_duplicate"]
    assert "93% similar to https://example.org/original" in failures[0].message


def test_every_failed_check_is_reported_not_just_the_first():
    found = checks(doc("\ufffd" * 10 + " tiny", title=None))
    assert {"title", "min_words", "encoding"} <= set(found)


# -- batch --------------------------------------------------------------------

LIVE = {"pages_ok": 50, "documents": 48, "chunks": 200}


def batch(**current) -> dict[str, Failure]:
    totals = {"pages_ok": 50, "pages_seen": 52, "errors": 1, "extracted": 50, "quarantined": 2,
              "documents": 48, "chunks": 200, **current}
    return {f.check: f for f in suites.check_batch(totals, LIVE, CONFIG)}


def test_a_steady_batch_passes():
    assert batch() == {}


def test_a_crawl_that_lost_most_pages_fails_each_drop_by_how_much():
    failed = batch(pages_ok=5, pages_seen=5, extracted=5, documents=4, chunks=15, quarantined=1)
    assert {"pages_drop", "documents_drop", "chunks_drop"} <= set(failed)
    assert failed["pages_drop"].value == 0.9 and failed["pages_drop"].threshold == 0.5
    assert "pages fell from 50 to 5 (90% drop, limit 50%)" in failed["pages_drop"].message
    assert "chunks fell from 200 to 15" in failed["chunks_drop"].message


def test_error_and_quarantine_rates_have_ceilings():
    failed = batch(errors=20, pages_seen=60, quarantined=30)
    assert failed["error_rate"].value == pytest.approx(0.3333, abs=1e-4)
    assert failed["quarantine_rate"].value == 0.6
    assert "60% of documents were quarantined (limit 30%)" in failed["quarantine_rate"].message


def test_first_snapshot_has_no_drop_checks_but_needs_documents():
    totals = {"pages_ok": 3, "pages_seen": 3, "extracted": 3, "documents": 0, "chunks": 0}
    failed = {f.check for f in suites.check_batch(totals, None, CONFIG)}
    assert failed == {"min_documents"}
    row = measures.measure_batch(totals, None)
    assert row["pages_drop"] is None and row["chunks_drop"] is None


def test_growth_is_not_a_drop():
    assert measures.share_dropped(10, 25) == 0.0
    assert measures.share_dropped(None, 5) is None


def test_the_run_summary_prints_the_quality_summary():
    from sitekb.report import _quality_lines

    lines = _quality_lines({
        "batch": {"success": False, "engine": "great_expectations 1.24.1",
                  "checks": [{"check": "pages_drop", "success": False}, {"check": "error_rate", "success": True}],
                  "measures": {"pages_drop": 0.88, "documents_drop": 0.1, "chunks_drop": None, "error_rate": 0.02,
                               "quarantine_rate": 0.04}},
        "documents": {"failed_checks": {"min_words": 1, "transcript_noise": 1}, "approved": 1},
        "data_docs": "/home/x/.sitekb/data_docs/demo/run/index.html",
    })
    text = "\n".join(lines)
    assert "FAILED pages_drop" in text and "pages 88%" in text and "chunks n/a" in text
    assert "min_words=1, transcript_noise=1; 1 approved" in text
    assert "data docs       /home/x/.sitekb/data_docs/demo/run/index.html" in text
    assert _quality_lines({}) == []
