"""Document checks and the batch gate that stands between a crawl and a snapshot.

Document checks measure each extracted document (title, length, language,
encoding damage, transcript noise, exact duplicates) and quarantine the ones
that fail, with every failed check and its measured value; nothing is
dropped silently. The batch gate compares a built snapshot with the live one
(page, document and chunk counts, error and quarantine rates) and rejects it
when the run looks broken.

Thresholds come from the site config's ``quality`` section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sitekb.sites import QualityConfig

MOJIBAKE = re.compile(r"Ã[\x80-\xbf©¨¢£¤¥§ª«®°±²³´µ¶·¸¹º»¼½¾¿]|â€[\x80-\xbf™œ\x9d“”˜]|Â[\xa0-\xbf]")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TIMESTAMP = re.compile(r"\[?\(?\b\d{1,2}:\d{2}(?::\d{2})?\b\)?\]?")
FILLERS = {"um", "uh", "erm", "er", "hmm", "mm", "ah", "like", "basically", "actually"}
FILLER_PHRASES = ("you know", "i mean", "sort of", "kind of")
MARKERS = re.compile(r"\[(?:inaudible|crosstalk|music|laughter|applause|silence|unintelligible)[^\]]*\]", re.I)
WORD = re.compile(r"[A-Za-zÀ-ÿ']+")


@dataclass(frozen=True)
class Failure:
    check: str
    value: float | str | None
    threshold: float | str | None
    message: str

    def as_dict(self) -> dict:
        return {"check": self.check, "value": self.value, "threshold": self.threshold, "message": self.message}


def bad_char_ratio(text: str) -> float:
    """Share of characters that are replacement chars, control chars or mojibake."""
    if not text:
        return 0.0
    damaged = text.count("\ufffd") + len(CONTROL.findall(text)) + 2 * len(MOJIBAKE.findall(text))
    return damaged / len(text)


def looks_like_transcript(text: str) -> bool:
    lowered = text.lower()
    return len(TIMESTAMP.findall(text)) >= 3 or bool(MARKERS.search(text)) or "transcript" in lowered[:500]


def transcript_noise(text: str) -> float:
    """0 (clean prose) .. 1 (unusable automatic transcript).

    Averages four signals: filler words per word, missing sentence punctuation,
    repeated 3-word phrases, and timestamps/[inaudible] markers per 100 words.
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


def check_document(doc: dict, config: QualityConfig) -> list[Failure]:
    """Every failed check of one extracted document (an empty list means accepted)."""
    failures = []
    text = doc.get("markdown") or ""
    words = doc.get("word_count") or 0
    if not (doc.get("title") or "").strip():
        failures.append(Failure("title", None, "non-empty", "the page has no title"))
    if words < config.min_words:
        failures.append(Failure("min_words", words, config.min_words, f"only {words} words (thin page)"))
    if words > config.max_words:
        failures.append(Failure("max_words", words, config.max_words, f"{words} words is above the maximum"))
    language = (doc.get("language") or "").split("-")[0].lower()
    if language and config.languages and language not in config.languages:
        failures.append(Failure("language", language, ",".join(config.languages), f"language {language!r} not allowed"))
    ratio = round(bad_char_ratio(text), 5)
    if ratio > config.max_bad_char_ratio:
        failures.append(Failure("encoding", ratio, config.max_bad_char_ratio, "damaged characters (mojibake, U+FFFD)"))
    if looks_like_transcript(text):
        noise = transcript_noise(text)
        if noise > config.max_transcript_noise:
            failures.append(Failure("transcript_noise", noise, config.max_transcript_noise,
                                    "noisy automatic transcript (fillers, no punctuation, timestamps)"))
    return failures


def batch_gate(current: dict, live: dict | None, config: QualityConfig) -> list[Failure]:
    """Failures of a run's totals against the live snapshot's (None: first snapshot)."""
    failures = []
    documents = current.get("documents", 0)
    if documents < config.min_documents:
        failures.append(Failure("min_documents", documents, config.min_documents,
                                f"only {documents} documents passed the checks"))
    attempted = max(1, current.get("pages_seen", 0))
    error_rate = round(current.get("errors", 0) / attempted, 4)
    if error_rate > config.max_error_rate:
        failures.append(Failure("error_rate", error_rate, config.max_error_rate,
                                f"{error_rate:.0%} of fetched URLs failed"))
    extracted = max(1, current.get("extracted", 0))
    quarantine_rate = round(current.get("quarantined", 0) / extracted, 4)
    if quarantine_rate > config.max_quarantine_rate:
        failures.append(Failure("quarantine_rate", quarantine_rate, config.max_quarantine_rate,
                                f"{quarantine_rate:.0%} of documents were quarantined"))
    if live:
        for key, limit in (("documents", config.max_page_drop), ("chunks", config.max_chunk_drop)):
            before, now = live.get(key, 0), current.get(key, 0)
            if before:
                drop = round((before - now) / before, 4)
                if drop > limit:
                    failures.append(Failure(f"{key}_drop", drop, limit,
                                            f"{key} fell from {before} to {now} ({drop:.0%} drop, limit {limit:.0%})"))
    return failures
