"""The extract stage: the main content of every page the crawl kept, as a markdown document.

Reads the run's kept pages (``sitekb.pages``), cuts the site's nosnippet
sections, extracts title, description, author, dates, language, canonical
URL and markdown with headings (:mod:`sitekb.extract`; a PDF's stored text as
it is), gives a page with a content owner's correction for its exact text the
corrected text and expires the corrections of pages that changed
(:mod:`sitekb.corrections`), and replaces the run's documents in
``sitekb.documents``, each with what the extractor cut and the fetch it was
made from.

A page whose body an earlier run of the site already extracted with the same
inputs (extractor version, nosnippet selectors, pruning rules:
:func:`sitekb.extract.extraction_inputs`) is not extracted again: its newest
such document is copied (a refresh with 1% of its pages changed extracts 1% of
them). A corrected document is never the one copied (the extractor's own text
is), and a page without main content is tried again.

Settings read: the site config's ``opt_out.nosnippet_selectors``.
"""

from __future__ import annotations

from sitekb.stages.context import RunContext, StageResult
from sitekb.store import documents, pages


def run(ctx: RunContext) -> StageResult:
    from sitekb import corrections
    from sitekb.extract import EXTRACTOR_VERSION, document_of_page, document_of_record, extraction_inputs

    selectors = tuple(ctx.site.opt_out.nosnippet_selectors)
    inputs = extraction_inputs(selectors)
    extracted, empty, reused = [], 0, 0
    for page in pages.kept_pages(ctx.conn, ctx.site.name, ctx.run_id, reuse=inputs):
        if page.previous is not None:   # this very body was extracted before with the same inputs
            extracted.append(document_of_record(page.previous))
            reused += 1
            continue
        doc = document_of_page(page.body, page.url, page.content_type, selectors)
        if doc is None:
            empty += 1
        else:
            extracted.append(doc)
    applied = corrections.apply(ctx.conn, ctx.site.name, ctx.run_id, extracted,
                                actor=str(ctx.params.get("actor") or "sitekb"))
    documents.replace_run(ctx.conn, ctx.run_id, ctx.site.name, applied.documents, applied.corrected,
                          inputs=inputs)
    summary = (f"{len(extracted)} documents ({len(extracted) - reused} extracted, {reused} unchanged pages "
               f"reused), {empty} pages without main content ({EXTRACTOR_VERSION})")
    if applied.corrected:
        summary += f"; {len(applied.corrected)} given a content owner's corrected text"
    details = {}
    if applied.expired:
        summary += f"; WARNING: {len(applied.expired)} correction(s) expired (their page changed)"
        details = {"expired_corrections": {c["url"]: {"correction_id": c["id"], "added_by": c["added_by"],
                                                      "reason": c["reason"], "old_hash": c["content_hash"],
                                                      "new_hash": c["expired_hash"]} for c in applied.expired},
                   "warnings": applied.warnings()}
    return StageResult(
        counts={"documents": len(extracted), "empty": empty, "extractor_version": EXTRACTOR_VERSION,
                "extracted": len(extracted) - reused, "reused": reused,
                "corrected": len(applied.corrected), "corrections_expired": len(applied.expired)},
        details=details,
        summary=summary,
    )
