"""The three expectation suites of the quality gate, as code.

- ``sitekb.documents`` (validate stage): one row per extracted document, the
  measures of :func:`sitekb.quality.measures.measure_document` plus the
  duplicate flags of :mod:`sitekb.quality.duplicates`.
- ``sitekb.chunks`` (chunk stage): one row per accepted document after
  chunking: its chunk count and its largest chunk in tokens of the embedding
  model's own tokenizer. The token check runs after chunking because only the
  chunker knows what is embedded (template, title and heading path included).
- ``sitekb.batch`` (evaluate stage): one row for the run, the measures of
  :func:`sitekb.quality.measures.measure_batch` against the live snapshot.

:func:`check_document` and :func:`check_batch` judge one row in plain Python
(the pipeline judges through Great Expectations, :mod:`sitekb.quality.runner`;
tests hold the two to the same verdicts).

Thresholds come from the site config's ``quality`` section
(:class:`sitekb.sites.QualityConfig`).

The safety checks (``prompt_injection``; ``hidden_text`` and
``hidden_injection``) follow the site's policy for them
(``quality.prompt_injection``, ``quality.hidden_text``): under ``quarantine``
and ``block`` they are document checks like the others (a failing page is
quarantined, and an approval lets it through); under ``report`` they are left
out of the suite and :func:`reported_checks` judges them, so a flagged page is
named in the run's record and kept. :func:`blocking_checks` names those whose
failure fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping

from sitekb.quality import measures
from sitekb.quality.checks import Check, Failure
from sitekb.sites import Policy, QualityConfig

DOCUMENTS = "sitekb.documents"
CHUNKS = "sitekb.chunks"
BATCH = "sitekb.batch"


def _pct(value) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else str(value)


def _quoted(value) -> str:
    text = " ".join(str(value).split())
    return f"“{text[:157]}…”" if len(text) > 160 else f"“{text}”"


def safety_checks(config: QualityConfig) -> list[tuple[Check, Policy]]:
    """The safety checks of a document, each with the site's policy for it."""
    return [
        (Check("prompt_injection", "injection", "null",
               describe=lambda v, r: (f"text reads as an instruction to an AI model ({r.get('injection_kind')}): "
                                      f"{_quoted(v)} in {_section(r.get('injection_section'))}, "
                                      f"{r.get('injections')} such phrase(s); approve the page if it only quotes "
                                      "such text (policy quality.prompt_injection)"),
               description="No text addressed to an AI model (ignore previous instructions, chat-template "
                           "tokens, role play, notes to AI assistants)."),
         config.prompt_injection),
        (Check("hidden_text", "hidden_words", "between", max_value=config.max_hidden_words,
               describe=lambda v, r: (f"{v} words are hidden from visitors ({r.get('hidden_how')}; limit "
                                      f"{config.max_hidden_words}), e.g. {_quoted(r.get('hidden_excerpt'))}; "
                                      "they are left out of the knowledge base (policy quality.hidden_text)"),
               description=f"At most {config.max_hidden_words} words of prose hidden from visitors."),
         config.hidden_text),
        (Check("hidden_injection", "hidden_injection", "null",
               describe=lambda v, r: (f"hidden text ({r.get('hidden_how')}) reads as an instruction to an AI "
                                      f"model: {_quoted(v)}; it is left out of the knowledge base "
                                      "(policy quality.hidden_text)"),
               description="No hidden text addressed to an AI model."),
         config.hidden_text),
    ]


def _section(section: str | None) -> str:
    return f"section {_quoted(section)}" if section else "the page's opening"


def reported_checks(config: QualityConfig) -> list[Check]:
    """Safety checks whose policy is ``report``: judged apart, their failures flag a page and keep it."""
    return [check for check, policy in safety_checks(config) if policy == "report"]


def blocking_checks(config: QualityConfig) -> frozenset[str]:
    """Names of the safety checks whose policy is ``block``: a page failing one fails the run."""
    return frozenset(check.name for check, policy in safety_checks(config) if policy == "block")


def document_checks(config: QualityConfig) -> list[Check]:
    """Per-document rules; a document failing any of them is quarantined."""
    checks = [
        Check("title", "title", "not_null", lambda v, r: "the page has no title",
              description="Every document has a non-empty title."),
        Check("min_words", "word_count", "between", min_value=config.min_words,
              describe=lambda v, r: f"only {v} words (thin page; minimum {config.min_words})",
              description=f"At least {config.min_words} words of main content."),
        Check("max_words", "word_count", "between", max_value=config.max_words,
              describe=lambda v, r: f"{v} words is above the maximum of {config.max_words}",
              description=f"At most {config.max_words} words."),
    ]
    if config.languages:
        allowed = tuple(lang.lower() for lang in config.languages)
        checks.append(Check(
            "language", "language", "in_set", value_set=allowed,
            describe=lambda v, r: (f"language {v!r} is not allowed (declared {r.get('declared_language')!r}, "
                                   f"detected {r.get('detected_language')!r}; allowed {', '.join(allowed)})"),
            description=f"Language is one of {', '.join(allowed)}."))
    checks += [
        Check("encoding", "bad_char_ratio", "between", max_value=config.max_bad_char_ratio,
              describe=lambda v, r: (f"{_pct(v)} of characters are damaged (U+FFFD, control characters, mojibake); "
                                     f"limit {_pct(config.max_bad_char_ratio)}"),
              description="Few damaged characters (U+FFFD, mojibake, control characters)."),
        Check("boilerplate", "boilerplate_share", "between", max_value=config.max_boilerplate_share,
              describe=lambda v, r: (f"{_pct(v)} of the page's visible words are boilerplate, the main content is "
                                     f"only {r.get('word_count')} words (limit {_pct(config.max_boilerplate_share)})"),
              description="The main content is not a sliver of the page (listing, tag or navigation page)."),
        Check("transcript_noise", "transcript_noise", "between", max_value=config.max_transcript_noise,
              describe=lambda v, r: (f"noisy automatic transcript, noise score {v} (fillers, no punctuation, "
                                     f"repeats, timestamps; limit {config.max_transcript_noise})"),
              description="Transcripts are edited, not raw automatic captions (only pages that look like one)."),
        Check("duplicate", "duplicate_of", "null",
              describe=lambda v, r: f"same text as {v} (the canonical copy is kept)",
              description="No exact copy of another document of the crawl."),
        Check("near_duplicate", "near_duplicate_of", "null",
              describe=lambda v, r: (f"{_pct(r.get('similarity'))} similar to {v} (the canonical copy is kept; "
                                     f"threshold {_pct(config.near_duplicate_threshold)})"),
              description=f"No near-duplicate (MinHash Jaccard >= {config.near_duplicate_threshold}) of another document."),
    ]
    checks += [check for check, policy in safety_checks(config) if policy != "report"]
    return checks


def chunk_checks(max_tokens: int) -> list[Check]:
    """Per-document rules after chunking: something to embed, and nothing over the model's limit."""
    return [
        Check("chunks", "chunks", "between", min_value=1,
              describe=lambda v, r: "chunking produced nothing to embed",
              description="Every accepted document yields at least one chunk."),
        Check("max_chunk_tokens", "max_chunk_tokens", "between", max_value=max_tokens,
              describe=lambda v, r: f"a chunk has {v} tokens, above the embedding limit of {max_tokens}",
              description=f"Every chunk fits the embedding model's input of {max_tokens} tokens."),
    ]


def _drop(what: str, limit: float) -> Check:
    return Check(
        f"{what}_drop", f"{what}_drop", "between", max_value=limit,
        describe=lambda v, r: (f"{what} fell from {r.get('live_' + what)} to {r.get(what)} "
                               f"({_pct(v)} drop, limit {_pct(limit)}) against the live snapshot"),
        description=f"At most {_pct(limit)} of the live snapshot's {what} vanish.",
    )


def batch_checks(config: QualityConfig) -> list[Check]:
    """Rules over a run's totals; one failing blocks publication."""
    return [
        Check("min_documents", "documents", "between", min_value=config.min_documents,
              describe=lambda v, r: f"only {v} documents passed the checks (minimum {config.min_documents})",
              description=f"At least {config.min_documents} documents."),
        _drop("pages", config.max_page_drop),
        _drop("documents", config.max_document_drop),
        _drop("chunks", config.max_chunk_drop),
        Check("error_rate", "error_rate", "between", max_value=config.max_error_rate,
              describe=lambda v, r: f"{_pct(v)} of fetched URLs failed (limit {_pct(config.max_error_rate)})",
              description=f"At most {_pct(config.max_error_rate)} of fetched URLs fail."),
        Check("quarantine_rate", "quarantine_rate", "between", max_value=config.max_quarantine_rate,
              describe=lambda v, r: (f"{_pct(v)} of documents were quarantined "
                                     f"(limit {_pct(config.max_quarantine_rate)})"),
              description=f"At most {_pct(config.max_quarantine_rate)} of documents are quarantined."),
    ]


def check_document(doc: Mapping, config: QualityConfig) -> list[Failure]:
    """Every failed document check of one document (duplicates need the whole crawl: not judged here)."""
    row = measures.measure_document(doc)
    return [f for check in document_checks(config) if (f := check.judge(row)) is not None]


def check_batch(current: Mapping, live: Mapping | None, config: QualityConfig) -> list[Failure]:
    """Failures of a run's totals against the live snapshot's."""
    row = measures.measure_batch(current, live)
    return [f for check in batch_checks(config) if (f := check.judge(row)) is not None]
