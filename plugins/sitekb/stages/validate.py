"""The validate stage: the document suite of the quality gate over every extracted document.

Each document is measured, checked for duplicates across the crawl and
judged by the ``sitekb.documents`` suite (:mod:`sitekb.quality.gate`); it is
accepted, or quarantined with every failed check and its measured value
(never silently dropped). A content owner's approval of the exact text lets
a failing document through. Data Docs go under ``$SITEKB_HOME/data_docs``.

The safety checks (text addressed to an AI model, hidden text) follow the
site's policies: a page flagged under ``report`` is accepted and named in the
record (``flagged_urls``) and the log; under ``quarantine`` it is held back
like any failing page; under ``block`` it is held back too and the run stops
here, blocked, with one line naming the pages (an approval of a page lets it
through, so it no longer blocks).

A page that still uses a retired term under a ``quarantine`` rule of the
site's ``messaging`` section (:mod:`sitekb.messaging`) is quarantined here,
before it is chunked or embedded, with check ``messaging`` and the rule's
reason (``retired term "Acme Cloud" (use "Acme Platform")``); an approval lets
it through like any quarantine. The ``report`` and ``block`` rules are judged
on the built snapshot by the evaluate stage.

It also counts the accepted pages per language and warns when the run's local
model does not know one of them (the bundled model is English-only).

Settings read: the site config's ``quality`` section (``prompt_injection``,
``hidden_text``, ``max_hidden_words`` among them),
``opt_out.nosnippet_selectors`` and ``messaging``; ``Settings.home``.
"""

from __future__ import annotations

import logging

from sitekb.stages.context import RunContext, StageResult

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> StageResult:
    from sitekb.errors import QualityGateFailed
    from sitekb.quality import gate
    from sitekb.store import documents, runs

    out = gate.validate_documents(ctx.conn, ctx.run_id, ctx.site, gate.data_docs_dir(ctx.site, ctx.run_id, ctx.home))
    details = {k: out.pop(k) for k in ("quarantined_urls", "approved_urls", "flagged_urls", "blocked_urls",
                                       "failed_checks")}
    for url, flags in sorted(details["flagged_urls"].items()):
        log.warning("flagged (policy report), kept: %s: %s", url, "; ".join(flags))
    failed = ", ".join(f"{k}={v}" for k, v in details["failed_checks"].items()) or "none"
    summary = (f"{out['accepted']} of {out['documents']} documents accepted, {out['quarantined']} quarantined "
               f"(failed checks: {failed}), {out['approved']} let through by an approval, "
               f"{out['flagged']} flagged and kept; "
               + (f"{out['validated_before']} unchanged since an earlier run kept their verdicts, "
                  if out["validated_before"] else "")
               + (f"{out['judged']} judged by {out['engine']}" if out["judged"] else "none needed judging again"))
    details["languages"] = documents.languages(ctx.conn, ctx.run_id)
    warning = model_language_warning(ctx.choice.provider, ctx.choice.model, details["languages"])
    if warning:
        log.warning("%s", warning)
        details["warnings"] = [warning]
        summary += f"; WARNING: {warning}"
    stop = None
    if details["blocked_urls"]:
        message = gate.blocked_message(ctx.site, ctx.run_id, details["blocked_urls"])
        runs.finish(ctx.conn, ctx.run_id, "blocked", message)
        stop = QualityGateFailed(message)
        summary = f"BLOCKED: {out['blocked']} page(s) failed a check whose policy is block; {summary}"
    return StageResult(counts=out, details=details, summary=summary, stop=stop)


def model_language_warning(provider: str, model: str, languages: dict[str, int]) -> str | None:
    """What to tell an operator whose accepted pages are in languages the run's local model does not know."""
    from sitekb.providers.base import LOCAL_MODEL_LANGUAGES

    known = LOCAL_MODEL_LANGUAGES.get(model) if provider == "local" else None
    foreign = {lang: n for lang, n in languages.items() if lang and known and lang not in known}
    if not foreign:
        return None
    total = sum(languages.values())
    listed = ", ".join(f"{lang} {n}" for lang, n in foreign.items())
    return (f"{sum(foreign.values())} of {total} accepted pages are not in {', '.join(known)} ({listed}), which the "
            f"local model {model} does not understand: vector search will match them poorly (keyword search "
            "stems each language). Use a multilingual model through an OpenAI-compatible server "
            "(embedding.provider openai with base_url; README, Languages)")
