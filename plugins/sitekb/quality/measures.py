"""What the quality gate measures: one number per check, per document and per batch.

Pure functions, no database and no Great Expectations: each turns an extracted
document (or a run's totals) into the measured values that the expectation
suites in :mod:`sitekb.quality.suites` judge. Keeping the measures here and the
thresholds in the suites means a failure always carries the value that was
measured, and the same measures feed Data Docs, ``documents.measures`` and the
quarantine listing.

Measures of a document: title present, word count, language (declared by the
page, or detected with py3langid, trafilatura's own choice, when the page says
nothing or contradicts itself), encoding damage (U+FFFD, control characters,
and mojibake as ftfy counts it), boilerplate share (share of the page's
visible words that extraction threw away), and for pages that look like
transcripts a noise score (filler words, missing punctuation, repeated
phrases, timestamps and ``[inaudible]`` markers: hand-written, since no
well-kept library scores automatic captions). Duplicates are measured across
the crawl by :mod:`sitekb.quality.duplicates`.

Safety measures of a document: the first phrase of its title and text that
reads as an instruction to an AI model (:mod:`sitekb.quality.injection`), with
its kind, section and excerpt; and, when the gate passes the page's hidden
text in (``doc["hidden"]``, :func:`sitekb.extract.hidden_text_of_page`), how
many words of prose the page hides from its visitors, how, and the first
instruction to an AI model among them. Without it (a document measured on its
own) the hidden-text measures are null, which every check passes.

Measures of a batch: page, document and chunk counts and their drop against
the live snapshot, the error rate and the quarantine rate.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from sitekb.quality.injection import find_instructions

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TIMESTAMP = re.compile(r"\[?\(?\b\d{1,2}:\d{2}(?::\d{2})?\b\)?\]?")
FILLERS = {"um", "uh", "erm", "er", "hmm", "mm", "ah", "like", "basically", "actually"}
FILLER_PHRASES = ("you know", "i mean", "sort of", "kind of")
MARKERS = re.compile(r"\[(?:inaudible|crosstalk|music|laughter|applause|silence|unintelligible)[^\]]*\]", re.I)
WORD = re.compile(r"[A-Za-zÀ-ÿ']+")
# Counts words the way sitekb.extract does (runs of letters/digits), for ratios against word_count.
_PLAIN_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")

# Language detection: fewer words than this (or, in scripts written without spaces,
# fewer letters than MIN_LANGUAGE_LETTERS), or a less confident answer, is "unsure".
MIN_LANGUAGE_WORDS = 30
MIN_LANGUAGE_LETTERS = 300
MIN_LANGUAGE_CONFIDENCE = 0.9
LANGUAGE_SAMPLE_CHARS = 5000


def word_count(text: str) -> int:
    return len(_PLAIN_WORD.findall(text or ""))


def bad_char_ratio(text: str) -> float:
    """Share of characters that are replacement chars, control chars or mojibake (ftfy's badness).

    ftfy counts each unlikely character sequence once; a mojibake sequence
    stands for two characters of the intended text or more, hence twice.
    """
    if not text:
        return 0.0
    from ftfy.badness import badness

    damaged = text.count("\ufffd") + len(CONTROL.findall(text)) + 2 * badness(text)
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


@functools.lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str | None, float]:
    """(ISO 639-1 language, confidence 0..1), or (None, confidence) when unsure.

    Unsure means too little text (under 30 words, or 300 letters in a script
    without spaces) or a confidence under 0.9. The first 5,000 characters are
    enough to tell languages apart.
    """
    sample = text[:LANGUAGE_SAMPLE_CHARS]
    if (len(_PLAIN_WORD.findall(sample)) < MIN_LANGUAGE_WORDS
            and sum(ch.isalpha() for ch in sample) < MIN_LANGUAGE_LETTERS):
        return None, 0.0
    language, confidence = _language_identifier().classify(sample)
    confidence = round(float(confidence), 4)
    return (language if confidence >= MIN_LANGUAGE_CONFIDENCE else None), confidence


MIN_QUESTION_CONFIDENCE = 0.7


def detect_question_language(question: str) -> str | None:
    """The language a search question is written in, or None when unsure (under 0.7 confident).

    A question is a few words, so any length is tried and the bar is lower than a
    page's; a wrong guess costs little, since the SQL API parses a question in a
    language the snapshot has no pages in with the snapshot's own languages.
    """
    language, confidence = _language_identifier().classify(question[:LANGUAGE_SAMPLE_CHARS])
    return language if confidence >= MIN_QUESTION_CONFIDENCE else None


def primary_language(tag: str | None) -> str | None:
    """'en-GB' → 'en'; None for an empty tag."""
    primary = (tag or "").split("-")[0].strip().lower()
    return primary or None


def boilerplate_share(extracted_words: int, visible_words: int | None) -> float | None:
    """Share of the page's visible words that extraction left out (None when unknown)."""
    if not visible_words:
        return None
    return round(min(1.0, max(0.0, 1 - extracted_words / visible_words)), 4)


HIDDEN_EXCERPT_CHARS = 160


def measure_injection(title: str | None, text: str) -> dict:
    """The first instruction to an AI model in a document's title and text, and how many there are (up to 5)."""
    # The extractor writes the title as the first '# ' line when the page's own h1 is missing.
    in_text = not title or text.lstrip().startswith(f"# {title}")
    found = find_instructions(text if in_text else f"{title}\n\n{text}")
    first = found[0] if found else None
    return {
        "injection": first.phrase if first else None,
        "injection_kind": first.kind if first else None,
        "injection_section": first.section if first else None,
        "injection_excerpt": first.excerpt if first else None,
        "injections": len(found),
    }


def measure_hidden(hidden: Sequence | None) -> dict:
    """Words of prose hidden from visitors, how they are hidden, and the first instruction to an AI among them.

    ``hidden``: the page's :class:`sitekb.extract.HiddenText` items; None when unknown (all measures null).
    """
    if hidden is None:
        return {"hidden_words": None, "hidden_how": None, "hidden_excerpt": None, "hidden_injection": None}
    words = sum(h.words for h in hidden)
    ways = Counter(h.how for h in hidden if h.text)
    instructions = next((found for h in hidden if h.text and (found := find_instructions(h.text, limit=1))), None)
    sample = " … ".join(h.text for h in sorted(hidden, key=lambda h: -h.words) if h.words)
    return {
        "hidden_words": words,
        "hidden_how": ", ".join(f"{how} ×{n}" if n > 1 else how for how, n in ways.most_common()) or None,
        "hidden_excerpt": (sample[:HIDDEN_EXCERPT_CHARS - 1] + "…" if len(sample) > HIDDEN_EXCERPT_CHARS
                           else sample) or None,
        "hidden_injection": instructions[0].phrase if instructions else None,
    }


def measure_document(doc: Mapping) -> dict:
    """The measured values of one extracted document (a row of the document suite).

    ``doc`` has the columns of ``sitekb.documents``: url, title, markdown,
    word_count, language, and optionally visible_words and hidden (the page's
    hidden text, see :func:`measure_hidden`).
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
        **measure_injection(doc.get("title"), text),
        **measure_hidden(doc.get("hidden")),
    }


def share_dropped(before: float | None, now: float) -> float | None:
    """How much of ``before`` is gone (0.9 = a 90% drop); None without a baseline."""
    if not before:
        return None
    return round(max(0.0, (before - now) / before), 4)


def measure_batch(current: Mapping, live: Mapping | None) -> dict:
    """The measured values of a run's totals against the live snapshot's (None: first snapshot).

    ``current``/``live`` carry pages_ok (pages fetched fine or not modified),
    pages_seen, errors, extracted, quarantined, documents and chunks. The error
    rate is errors / pages_seen, where both count the fetch failures (requests
    that got no page at all: refused, timed out, 5xx after retries), so a site
    that goes down mid-crawl cannot pass as a small clean one.
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
