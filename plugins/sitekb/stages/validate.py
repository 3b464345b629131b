"""The validate stage: the document suite of the quality gate over every extracted document.

Each document is measured, checked for duplicates across the crawl and
judged by the ``sitekb.documents`` suite (:mod:`sitekb.quality.gate`); it is
accepted, or quarantined with every failed check and its measured value
(never silently dropped). A content owner's approval of the exact text lets
a failing document through. Data Docs go under ``$SITEKB_HOME/data_docs``.

Settings read: the site config's ``quality`` section; ``Settings.home``.
"""

from __future__ import annotations

from sitekb.stages.context import RunContext, StageResult


def run(ctx: RunContext) -> StageResult:
    from sitekb.quality import gate

    out = gate.validate_documents(ctx.conn, ctx.run_id, ctx.site, gate.data_docs_dir(ctx.site, ctx.run_id, ctx.home))
    details = {k: out.pop(k) for k in ("quarantined_urls", "approved_urls", "failed_checks")}
    failed = ", ".join(f"{k}={v}" for k, v in details["failed_checks"].items()) or "none"
    return StageResult(
        counts=out, details=details,
        summary=(f"{out['accepted']} of {out['documents']} documents accepted, {out['quarantined']} quarantined "
                 f"(failed checks: {failed}), {out['approved']} let through by an approval; {out['engine']}"),
    )
