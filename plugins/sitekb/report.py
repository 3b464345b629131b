"""Readable accounts of a run: the summary printed at the end of `sitekb run`/`make run`."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from sitekb.errors import NotFound

STAGE_ORDER = ("crawl", "extract", "validate", "chunk", "embed", "build", "evaluate", "publish")


def run_summary(conn: psycopg.Connection, run_id: str) -> dict:
    """Everything the end-of-run summary shows, from the database alone."""
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute("SELECT * FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()
        if run is None:
            raise NotFound(f"run {run_id!r} does not exist")
        snap = cur.execute(
            """SELECT s.*, coalesce(array_agg(a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases
               FROM sitekb.snapshots s LEFT JOIN sitekb.aliases a USING (snapshot_id)
               WHERE s.run_id = %s GROUP BY s.snapshot_id""",
            (run_id,),
        ).fetchone()
    stages = run["stages"] or {}
    crawl, embed, validate = stages.get("crawl", {}), stages.get("embed", {}), stages.get("validate", {})
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
        "quarantined": validate.get("quarantined", 0),
        "quarantined_urls": validate.get("quarantined_urls", {}),
        "chunks": stages.get("chunk", {}).get("chunks", 0),
        "embedding_model": f"{embed.get('provider', '?')}:{embed.get('model', '?')}",
        "dimensions": embed.get("dimensions"),
        "embeddings_reused": embed.get("reused", 0),
        "embeddings_computed": embed.get("embedded", 0),
        "golden": stages.get("evaluate", {}).get("golden"),
        "diff": stages.get("evaluate", {}).get("diff"),
        "stage_seconds": {name: stages[name].get("seconds") for name in STAGE_ORDER if name in stages},
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"sitekb run {summary['run_id']}  site={summary['site']}  status={summary['status']}",
        f"  snapshot        {summary['snapshot_id']} ({summary['snapshot_state']}"
        + (f", alias {', '.join(summary['aliases'])}" if summary["aliases"] else "") + ")",
        f"  pages crawled   {summary['pages_crawled']} ({summary['pages_not_modified']} not modified)",
        f"  excluded        {_counts(summary['excluded'])}",
        f"  crawl errors    {_counts(summary['crawl_errors'])}",
        f"  documents       {summary['documents']} accepted, {summary['quarantined']} quarantined",
    ]
    for url, checks in sorted(summary["quarantined_urls"].items()):
        lines.append(f"                  quarantined {url}: {', '.join(checks)}")
    lines += [
        f"  chunks          {summary['chunks']}",
        f"  embedding       {summary['embedding_model']} ({summary['dimensions']} dimensions)",
        f"  embeddings      {summary['embeddings_reused']} reused from cache, {summary['embeddings_computed']} computed",
    ]
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
        lines.append(f"   {p.snippet()}")
    return "\n".join(lines)


def _counts(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"
