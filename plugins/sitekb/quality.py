"""What the quality gate measures: one number per check, per document and per batch.

Pure functions, no database and no Great Expectations: each turns an extracted
document (or a run's totals) into the measured values that the expectation
suites in :mod:`sitekb.expectations` judge. Keeping the measures here and the
thresholds in the suites means a failure always carries the value that was
measured, and the same measures feed Data Docs, ``documents.measures`` and the
quarantine listing.

Measures of a document: title present, word count, language (declared by the
page, or detected from stopwords when the page says nothing or contradicts
itself), encoding damage (U+FFFD, control characters, mojibake), boilerplate
share (share of the page's visible words that extraction threw away), and for
pages that look like transcripts a noise score (filler words, missing
punctuation, repeated phrases, timestamps and ``[inaudible]`` markers).
Duplicates are measured across the crawl by :mod:`sitekb.dedup`.

Measures of a batch: page, document and chunk counts and their drop against
the live snapshot, the error rate and the quarantine rate.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

MOJIBAKE = re.compile(r"Ã[\x80-\xbf©¨¢£¤¥§ª«®°±²³´µ¶·¸¹º»¼½¾¿]|â€[\x80-\xbf™œ\x9d“”˜]|Â[\xa0-\xbf]")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TIMESTAMP = re.compile(r"\[?\(?\b\d{1,2}:\d{2}(?::\d{2})?\b\)?\]?")
FILLERS = {"um", "uh", "erm", "er", "hmm", "mm", "ah", "like", "basically", "actually"}
FILLER_PHRASES = ("you know", "i mean", "sort of", "kind of")
MARKERS = re.compile(r"\[(?:inaudible|crosstalk|music|laughter|applause|silence|unintelligible)[^\]]*\]", re.I)
WORD = re.compile(r"[A-Za-zÀ-ÿ']+")
# Counts words the way sitekb.extract does (runs of letters/digits), for ratios against word_count.
_PLAIN_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")

# The most frequent function words of the languages a site is most likely to
# mix up; enough to tell them apart on a few hundred words without a model.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and of to in is that for it with as on are this be by or from at not have an was we you".split()),
    "de": frozenset("der die und das ist nicht zu den mit von sich des auf für ein eine dem im auch es wir sie".split()),
    "fr": frozenset("le la les et des est une un du en que pour dans qui ne pas sur au avec nous vous ce".split()),
    "es": frozenset("el la los las de y que en un una es por con para del se no al lo como más su".split()),
    "it": frozenset("il la di e che è per un una non del della con sono gli le si da in al".split()),
    "nl": frozenset("de het een en van is dat op te in niet voor met zijn ook die wij je om".split()),
    "pt": frozenset("o a os as de e que do da em um uma para com não por se na no mais".split()),
}


@dataclass(frozen=True)
class Failure:
    """One failed check: its name, the measured value, the threshold, and a sentence for people."""

    check: str
    value: float | str | None
    threshold: float | str | None
    message: str

    def as_dict(self) -> dict:
        return {"check": self.check, "value": self.value, "threshold": self.threshold, "message": self.message}


def word_count(text: str) -> int:
    return len(_PLAIN_WORD.findall(text or ""))


def bad_char_ratio(text: str) -> float:
    """Share of characters that are replacement chars, control chars or mojibake."""
    if not text:
        return 0.0
    damaged = text.count("\ufffd") + len(CONTROL.findall(text)) + 2 * len(MOJIBAKE.findall(text))
    return damaged / len(text)


def looks_like_transcript(text: str) -> bool:
    """Timestamps, [inaudible]-style markers or the word 'transcript' near the top."""
    lowered = text.lower()
    return len(TIMESTAMP.findall(text)) >= 3 or bool(MARKERS.search(text)) or "transcript" in lowered[:500]


def transcript_noise(text: str) -> float:
    """0 (clean prose) .. 1 (unusable automatic transcript).

    Averages four signals: filler words per word, missing sentence punctuation,
    repeated 3-word phrases, and timestamps/[inaudible] markers per 100 words.
    An edited transcript (speaker names, sentences, no fillers) scores low; an
    automatic one scores high whatever its topic.
    """
    words = [w.lower() for w in WORD.findall(text)]
    if len(words) < 20:
        return 0.0
    lowered = " ".join(words)
    fillers = sum(1 for w in words if w in FILLERS) + sum(lowered.count(p) for p in FILLER_PHRASES)
    filler_score = min(1.0, fillers / len(words) * 10)  # 10% fillers → 1.0
    sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", text)))
    words_per_sentence = len(words) / sentences
    punctuation_score = min(1.0, max(0.0, (words_per_sentence - 25) / 50))  # 75+ words per sentence → 1.0
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    repeated = len(trigrams) - len(set(trigrams))
    repetition_score = min(1.0, repeated / max(1, len(trigrams)) * 4)
    marks = len(TIMESTAMP.findall(text)) + len(MARKERS.findall(text))
    marker_score = min(1.0, marks / len(words) * 100 / 5)  # 5 per 100 words → 1.0
    return round((filler_score + punctuation_score + repetition_score + marker_score) / 4, 4)


def detect_language(text: str, sample_words: int = 400) -> tuple[str | None, float]:
    """(language, share of sample words that are its stopwords), or (None, 0) when unsure.

    Unsure means fewer than 30 words, under 12% stopwords, or a runner-up
    language with more than half the winner's hits.
    """
    words = [w.lower() for w in WORD.findall(text)[:sample_words]]
    if len(words) < 30:
        return None, 0.0
    hits = Counter({lang: sum(1 for w in words if w in stop) for lang, stop in STOPWORDS.items()})
    (best, top), (_, second) = hits.most_common(2)
    share = top / len(words)
    if share < 0.12 or second > top / 2:
        return None, round(share, 4)
    return best, round(share, 4)


def primary_language(tag: str | None) -> str | None:
    """'en-GB' → 'en'; None for an empty tag."""
    primary = (tag or "").split("-")[0].strip().lower()
    return primary or None


def boilerplate_share(extracted_words: int, visible_words: int | None) -> float | None:
    """Share of the page's visible words that extraction left out (None when unknown)."""
    if not visible_words:
        return None
    return round(min(1.0, max(0.0, 1 - extracted_words / visible_words)), 4)


def measure_document(doc: Mapping) -> dict:
    """The measured values of one extracted document (a row of the document suite).

    ``doc`` has the columns of ``sitekb.documents``: url, title, markdown,
    word_count, language, and optionally visible_words.
    """
    text = doc.get("markdown") or ""
    words = doc.get("word_count")
    words = word_count(text) if words is None else int(words)
    declared = primary_language(doc.get("language"))
    detected, _ = detect_language(text)
    transcript = looks_like_transcript(text)
    return {
        "url": doc["url"],
        "title": (doc.get("title") or "").strip() or None,
        "word_count": words,
        # A confident detection wins over the page's declaration: templates
        # often hard-code lang="en" on every page of a multilingual site.
        "language": detected or declared,
        "declared_language": declared,
        "detected_language": detected,
        "bad_char_ratio": round(bad_char_ratio(text), 5),
        "boilerplate_share": boilerplate_share(words, doc.get("visible_words")),
        "looks_like_transcript": transcript,
        "transcript_noise": transcript_noise(text) if transcript else None,
    }


def share_dropped(before: float | None, now: float) -> float | None:
    """How much of ``before`` is gone (0.9 = a 90% drop); None without a baseline."""
    if not before:
        return None
    return round(max(0.0, (before - now) / before), 4)


def measure_batch(current: Mapping, live: Mapping | None) -> dict:
    """The measured values of a run's totals against the live snapshot's (None: first snapshot).

    ``current``/``live`` carry pages_ok (pages fetched fine or not modified),
    pages_seen, errors, extracted, quarantined, documents and chunks.
    """
    live = live or {}
    attempted = max(1, current.get("pages_seen", 0))
    extracted = max(1, current.get("extracted", 0))
    return {
        "run": "batch",
        "pages": current.get("pages_ok", 0),
        "documents": current.get("documents", 0),
        "chunks": current.get("chunks", 0),
        "live_pages": live.get("pages_ok"),
        "live_documents": live.get("documents"),
        "live_chunks": live.get("chunks"),
        "pages_drop": share_dropped(live.get("pages_ok"), current.get("pages_ok", 0)),
        "documents_drop": share_dropped(live.get("documents"), current.get("documents", 0)),
        "chunks_drop": share_dropped(live.get("chunks"), current.get("chunks", 0)),
        "error_rate": round(current.get("errors", 0) / attempted, 4),
        "quarantine_rate": round(current.get("quarantined", 0) / extracted, 4),
    }


def check_document(doc: Mapping, config) -> list[Failure]:
    """Every failed document check of one document, judged in plain Python.

    Duplicates need the whole crawl and are judged by :mod:`sitekb.dedup`;
    the pipeline judges through Great Expectations (:mod:`sitekb.expectations`).
    """
    from sitekb.expectations.suites import document_checks

    row = measure_document(doc)
    return [f for check in document_checks(config) if (f := check.judge(row)) is not None]


def batch_gate(current: Mapping, live: Mapping | None, config) -> list[Failure]:
    """Failures of a run's totals against the live snapshot's, judged in plain Python."""
    from sitekb.expectations.suites import batch_checks

    row = measure_batch(current, live)
    return [f for check in batch_checks(config) if (f := check.judge(row)) is not None]
