"""The extract stage: the main content of every page the crawl kept, as a markdown document.

Reads the run's kept pages (``sitekb.pages``), cuts the site's nosnippet
sections, extracts title, description, author, dates, language, canonical
URL and markdown with headings (:mod:`sitekb.extract`; a PDF's stored text as
it is), and replaces the run's documents in ``sitekb.documents``.

Settings read: the site config's ``opt_out.nosnippet_selectors``.
"""

from __future__ import annotations

from sitekb.stages.context import RunContext, StageResult
from sitekb.store import documents, pages


def run(ctx: RunContext) -> StageResult:
    from sitekb.extract import EXTRACTOR_VERSION, document_of_page

    selectors = tuple(ctx.site.opt_out.nosnippet_selectors)
    extracted, empty = [], 0
    for page in pages.kept_pages(ctx.conn, ctx.site.name, ctx.run_id):
        doc = document_of_page(page.body, page.url, page.content_type, selectors)
        if doc is None:
            empty += 1
        else:
            extracted.append(doc)
    documents.replace_run(ctx.conn, ctx.run_id, ctx.site.name, extracted)
    return StageResult(
        counts={"documents": len(extracted), "empty": empty, "extractor_version": EXTRACTOR_VERSION},
        summary=f"{len(extracted)} documents extracted, {empty} pages without main content ({EXTRACTOR_VERSION})",
    )
