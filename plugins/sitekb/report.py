"""Readable accounts for people: the summary printed at the end of `sitekb run`/`make run`,
passages with their sources, and a snapshot diff. Formatting only; the rows come from the store."""

from __future__ import annotations

import psycopg

from sitekb.stages import NAMES as STAGE_ORDER
from sitekb.store import embeddings, runs


def run_summary(conn: psycopg.Connection, run_id: str) -> dict:
    """Everything the end-of-run summary shows, from the database alone."""
    run, snap = runs.summary(conn, run_id)
    stages = run["stages"] or {}
    crawl, embed, validate = stages.get("crawl", {}), stages.get("embed", {}), stages.get("validate", {})
    spend = embeddings.run_spend(conn, run_id)
    return {
        "run_id": run_id,
        "site": run["site"],
        "status": run["status"],
        "error": run["error"],
        "snapshot_id": snap["snapshot_id"] if snap else None,
        "snapshot_state": snap["state"] if snap else None,
        "aliases": snap["aliases"] if snap else [],
        "pages_crawled": crawl.get("pages", 0),
        "pages_not_modified": crawl.get("not_modified", 0),
        "excluded": crawl.get("excluded", {}),
        "crawl_errors": crawl.get("errors", {}),
        "documents": validate.get("accepted", stages.get("extract", {}).get("documents", 0)),
        # Documents the extract stage copied from an earlier run (their page's body unchanged) vs extracted.
        "documents_reused": stages.get("extract", {}).get("reused", 0),
        "quarantined": validate.get("quarantined", 0),
        "quarantined_urls": validate.get("quarantined_urls", {}),
        # Pages a safety check flagged under the `report` policy: kept, but an owner should look.
        "flagged_urls": validate.get("flagged_urls", {}),
        # Accepted pages per language, and what the run warned of (pages its local model does not know).
        "languages": validate.get("languages", {}),
        "warnings": validate.get("warnings", []) + stages.get("extract", {}).get("warnings", []),
        # Content owners' corrections the extract stage used, and those that expired (their page changed).
        "corrected": stages.get("extract", {}).get("corrected", 0),
        "corrections_expired": stages.get("extract", {}).get("expired_corrections", {}),
        "chunks": stages.get("chunk", {}).get("chunks", 0),
        "embedding_model": f"{embed.get('provider', '?')}:{embed.get('model', '?')}",
        "dimensions": embed.get("dimensions"),
        # Mapped embed tasks (Airflow) embed before the embed stage runs: the run's spend counts them all.
        "embeddings_reused": max(0, embed.get("chunks", 0) - max(embed.get("embedded", 0), spend["inputs"]))
        if embed else 0,
        "embeddings_computed": max(embed.get("embedded", 0), spend["inputs"]),
        "golden": stages.get("evaluate", {}).get("golden"),
        "diff": stages.get("evaluate", {}).get("diff"),
        "stage_seconds": {name: stages[name].get("seconds") for name in STAGE_ORDER if name in stages},
        "quality": (snap["quality"] if snap else None) or {},
        "tokens": stages.get("chunk", {}).get("tokens", 0),
        "spend": spend,
        "verdict": stages.get("evaluate", {}).get("verdict"),
        "failures": stages.get("evaluate", {}).get("failures") or [],
        "dry_run": bool((run["params"] or {}).get("dry_run")),
        # A rebuild (`sitekb rebuild`): the crawl whose pages it took up, without a request.
        "rebuild_of": (run["params"] or {}).get("rebuild_of"),
        "estimated_usd": embed.get("estimated_usd"),
        "diff_pages": (snap.get("diff") if snap else None) or {},
        # What the snapshot covers (sitekb.coverage): shares per section, tag, language, topic; its warnings.
        "coverage": _coverage(conn, snap),
        # Retired terms and claims (sitekb.messaging): per rule, the snapshot's pages and chunks still using it.
        "messaging": _messaging(conn, snap),
    }


def _messaging(conn: psycopg.Connection, snap: dict | None) -> list[dict]:
    from sitekb.store import messaging

    return messaging.summary(conn, snap["snapshot_id"] if snap else None)


def _messaging_lines(summary: dict) -> list[str]:
    """``"Acme Cloud" (block): 2 pages, 3 chunks still use it; 1 held back`` for every rule with a hit."""
    return [f'"{r["rule"]}" ({r["policy"]}): {r["pages"]} pages, {r["chunks"]} chunks still use it'
            + (f'; {r["held_back"]} held back' if r["held_back"] else "")
            for r in summary.get("messaging") or [] if r["pages"] or r["held_back"]]


def _coverage(conn: psycopg.Connection, snap: dict | None) -> dict | None:
    from sitekb.store import coverage

    return coverage.get(conn, snap["snapshot_id"]) if snap else None


def _coverage_line(record: dict | None) -> str:
    from sitekb.coverage import headline

    return headline(record)


def format_note(summary: dict) -> str:
    """The run's account in a few Markdown lines: the note of its Airflow DAG run."""
    s = summary
    snap = s["snapshot_id"]
    if s["dry_run"]:
        head = f"**sitekb {s['site']}** · dry run: nothing published; embedding would cost ${s['estimated_usd'] or 0:.4f}"
    elif s["status"] == "succeeded":
        head = f"**sitekb {s['site']}** · snapshot {snap} published to {', '.join(s['aliases']) or '-'}"
    elif s["status"] == "blocked":
        head = f"**sitekb {s['site']}** · snapshot {snap} REJECTED, live snapshot unchanged"
    else:
        head = f"**sitekb {s['site']}** · run {s['status']}" + (f" (snapshot {snap})" if snap else "")
    spend = s["spend"]
    lines = [
        head,
        f"- pages: {s['pages_crawled']} ({s['pages_not_modified']} not modified); errors: {_counts(s['crawl_errors'])}",
        f"- excluded by rule: {_counts(s['excluded'])}",
        f"- documents: {s['documents']} accepted, {s['quarantined']} quarantined"
        + (f", {len(s['flagged_urls'])} flagged and kept" if s.get("flagged_urls") else ""),
        f"- chunks: {s['chunks']}, {s['tokens']} tokens; embedded {s['embeddings_computed']} new, "
        f"{s['embeddings_reused']} reused; {spend['tokens']} tokens billed, ${spend['usd']:.4f}",
    ]
    if s.get("verdict"):
        golden = s.get("golden")
        lines.append(f"- gate: {s['verdict']}" + (f"; golden {golden['hits']}/{golden['asked']}" if golden else ""))
    if s.get("diff"):
        d = s["diff"]
        lines.append(f"- diff vs live: +{d.get('added', 0)} pages, -{d.get('removed', 0)}, ~{d.get('changed', 0)} changed")
    lines += [f"- messaging: {line}" for line in _messaging_lines(s)]
    if s.get("coverage"):
        lines.append(f"- coverage: {_coverage_line(s['coverage'])}")
        lines += [f"- **coverage warning**: {w}" for w in s["coverage"].get("warnings") or []]
    if s.get("error"):
        lines.append(f"- reason: {s['error']}")
    lines.append(f"- run: {s['run_id']}")
    return "\n".join(lines)


def review_markdown(conn: psycopg.Connection, run_id: str, limit: int = 15) -> str:
    """What a content owner reads before approving a snapshot: verdict, golden results, diff, quarantine."""
    s = run_summary(conn, run_id)
    golden = s.get("golden") or {}
    lines = [f"### {s['site']}: snapshot {s['snapshot_id']}", "", format_note(s), ""]
    if golden:
        lines.append(f"**Golden questions**: {golden.get('hits')}/{golden.get('asked')} find their page")
        for question in (golden.get("missed") or [])[:limit]:
            lines.append(f"- missed: {question}")
        lines.append("")
    diff = s["diff_pages"]
    for kind in ("added", "removed", "changed"):
        urls = diff.get(kind) or []
        if urls:
            lines.append(f"**Pages {kind}** ({len(urls)}): " + ", ".join(urls[:limit])
                         + (f", ... and {len(urls) - limit} more" if len(urls) > limit else ""))
    lines.append("")
    lines.append("**Quarantined pages**" + ("" if s["quarantined_urls"] else ": none"))
    for url, checks in sorted(s["quarantined_urls"].items())[:limit]:
        lines.append(f"- {url}: {', '.join(checks)}")
    if len(s["quarantined_urls"]) > limit:
        lines.append(f"- ... and {len(s['quarantined_urls']) - limit} more")
    if s.get("flagged_urls"):
        lines += ["", "**Flagged and kept** (policy report)"]
        lines += [f"- {url}: {'; '.join(flags)}" for url, flags in sorted(s["flagged_urls"].items())[:limit]]
    if s.get("warnings"):
        lines += ["", "**Warnings**"] + [f"- {w}" for w in s["warnings"]]
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    lines = [
        f"sitekb run {summary['run_id']}  site={summary['site']}  status={summary['status']}",
        f"  snapshot        {summary['snapshot_id']} ({summary['snapshot_state']}"
        + (f", alias {', '.join(summary['aliases'])}" if summary["aliases"] else "") + ")",
        (f"  pages staged    {summary['pages_crawled']} from run {summary['rebuild_of']} (no request sent)"
         if summary.get("rebuild_of") else
         f"  pages crawled   {summary['pages_crawled']} ({summary['pages_not_modified']} not modified)"),
        f"  excluded        {_counts(summary['excluded'])}",
        f"  crawl errors    {_counts(summary['crawl_errors'])}",
        f"  documents       {summary['documents']} accepted, {summary['quarantined']} quarantined"
        + (f" ({summary['documents_reused']} unchanged pages not extracted again)"
           if summary.get("documents_reused") else ""),
    ]
    for url, checks in sorted(summary["quarantined_urls"].items()):
        lines.append(f"                  quarantined {url}: {', '.join(checks)}")
    for url, flags in sorted(summary.get("flagged_urls", {}).items()):
        lines.append(f"                  flagged, kept {url}: {'; '.join(flags)}")
    if len(summary.get("languages") or {}) > 1:
        lines.append(f"  languages       {_counts(summary['languages'])}")
    if summary.get("corrected"):
        lines.append(f"  corrections     {summary['corrected']} page(s) use a content owner's corrected text")
    for warning in summary.get("warnings") or []:
        lines.append(f"  WARNING         {warning}")
    lines += [
        f"  chunks          {summary['chunks']}",
        f"  embedding       {summary['embedding_model']} ({summary['dimensions']} dimensions)",
        f"  embeddings      {summary['embeddings_reused']} reused from cache, {summary['embeddings_computed']} computed",
    ]
    lines += _quality_lines(summary.get("quality") or {})
    lines += [f"  messaging       {line}" for line in _messaging_lines(summary)]
    if summary.get("coverage"):
        lines.append(f"  coverage        {_coverage_line(summary['coverage'])}")
        lines += [f"  WARNING         coverage: {w}" for w in summary["coverage"].get("warnings") or []]
    if summary.get("golden"):
        g = summary["golden"]
        lines.append(f"  golden          {g['hits']}/{g['asked']} questions find their page")
    if summary.get("diff"):
        d = summary["diff"]
        lines.append(f"  diff vs live    +{d.get('added', 0)} pages, -{d.get('removed', 0)}, "
                     f"~{d.get('changed', 0)} changed; chunks +{d.get('chunks_added', 0)} -{d.get('chunks_removed', 0)}")
    timing = "  ".join(f"{k} {v:.2f}s" for k, v in summary["stage_seconds"].items() if v is not None)
    lines.append(f"  time per stage  {timing}")
    if summary.get("error"):
        lines.append(f"  error           {summary['error']}")
    return "\n".join(lines)


def format_passages(passages: list, question: str) -> str:
    lines = [f"Top {len(passages)} passages for: {question!r}"]
    for rank, p in enumerate(passages, start=1):
        heading = " > ".join(p.heading_path)
        lines.append(f"{rank}. [{p.score:.3f}] {p.title or '(untitled)'}  {p.url}")
        if heading:
            lines.append(f"   {heading}")
        lines.append(f"   {p.snippet}")
    return "\n".join(lines)


def format_pages(pages: list) -> str:
    """Pages of an answer (``query.search_pages``), each with its best passages."""
    lines = [f"Top {len(pages)} pages:"]
    for page in pages:
        lines.append(f"{page.rank}. [{page.score:.3f}] {page.title or '(untitled)'}  {page.url}")
        for passage in page.passages:
            heading = " > ".join(passage.heading_path)
            lines.append(f"   - [{passage.score:.3f}] {heading + ': ' if heading else ''}{passage.snippet}")
    return "\n".join(lines)


def format_diff(readable, limit: int = 50, text: bool = True) -> str:
    """A diffs.ReadableDiff for a content owner: which pages came, went and changed, what changed, why pages went."""
    diff = readable.diff
    origin = f"snapshot {diff.from_snapshot}" if diff.from_snapshot is not None else "nothing"
    lines = [
        f"{diff.site}: {origin} -> snapshot {diff.to_snapshot}",
        f"  pages   {len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed, "
        f"{diff.unchanged_pages} unchanged",
        f"  chunks  {diff.chunks_before} -> {diff.chunks_after}: {diff.chunks_added} new, "
        f"{diff.chunks_removed} gone ({diff.churn:.0%} churn)",
    ]
    for heading, pages, sign in (("Added pages", diff.added, "+"), ("Removed pages", diff.removed, "-"),
                                 ("Changed pages", diff.changed, "~")):
        if not pages:
            continue
        lines += ["", f"{heading} ({len(pages)}):"]
        for page in pages[:limit]:
            if sign == "~":
                detail = (f"{page.chunks_before} -> {page.chunks_after} chunks, "
                          f"{page.chunks_added} rewritten or new, {page.chunks_removed} replaced or gone")
            else:
                detail = f"{page.chunks_after if sign == '+' else page.chunks_before} chunks"
            lines.append(f"  {sign} {page.title or '(untitled)'}  {page.url}  ({detail})")
            if sign == "-" and page.url in readable.removals:
                lines.append(f"      why: {readable.removals[page.url]['reason']}")
            change = readable.changes.get(page.url) if sign == "~" and text else None
            if change is not None:
                if change.headings:
                    lines.append("      sections: " + "; ".join(change.headings))
                lines += [f"      {line}" for line in change.lines]
                if change.more_lines:
                    lines.append(f"      ... {change.more_lines} more diff lines (--max-lines 0 shows all)")
        if len(pages) > limit:
            lines.append(f"  ... and {len(pages) - limit} more (--json lists all)")
    return "\n".join(lines)


def _quality_lines(quality: dict) -> list[str]:
    """The quality summary stored with the snapshot: gate verdict, batch measures, failed checks, Data Docs."""
    batch = quality.get("batch") or {}
    if not batch:
        return []
    m = batch.get("measures") or {}

    def pct(key: str) -> str:
        return "n/a" if m.get(key) is None else f"{m[key]:.0%}"

    verdict = "passed" if batch.get("success") else "FAILED " + ", ".join(
        c["check"] for c in batch.get("checks", []) if not c["success"])
    docs = quality.get("documents") or {}
    lines = [
        f"  quality gate    {verdict} ({batch.get('engine')}): drop vs live pages {pct('pages_drop')}, "
        f"documents {pct('documents_drop')}, chunks {pct('chunks_drop')}; error rate {pct('error_rate')}, "
        f"quarantine rate {pct('quarantine_rate')}",
        f"  checks failed   {_counts(docs.get('failed_checks') or {})}"
        + (f"; {docs['approved']} approved by content owners" if docs.get("approved") else ""),
    ]
    if quality.get("data_docs"):
        lines.append(f"  data docs       {quality['data_docs']}")
    return lines


def _counts(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"
