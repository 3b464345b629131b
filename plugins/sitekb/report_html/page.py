"""The HTML report of a site: one self-contained page a person would rather look at than read.

:func:`render` reads the site's records and returns one HTML document with
everything inline (CSS in a ``<style>``, charts as SVG from :mod:`.charts`;
no script, no external asset, no request of any kind):

- per run, the verdict that decided it, in plain words (:mod:`.verdict`);
- the snapshot timeline (pages, chunks, golden score, published or rejected);
- the funnel of one run (the newest, or the one asked for): crawled,
  excluded by rule, quarantined, in the snapshot;
- the coverage of that run's snapshot (or of the live one): sections with the
  site's limit, topic clusters, tags and languages (:mod:`sitekb.coverage`);
- what embedding cost per run (``sitekb.embedding_spend``);
- for engineers: the Great Expectations Data Docs of each run that still has
  them on disk.

Read-only: it writes nothing (coverage a snapshot lacks is named, not
computed; ``sitekb coverage`` computes it). The CLI (``sitekb report``), the
API (``GET /report/{site}``) and the Airflow Knowledge view all call
:func:`render`.
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from datetime import datetime
from html import escape
from pathlib import Path

import psycopg

from sitekb.errors import NotFound
from sitekb.passages import DEFAULT_ALIAS
from sitekb.report_html import charts
from sitekb.report_html.verdict import Verdict, of_run
from sitekb.store import coverage as coverage_store
from sitekb.store import embeddings, knowledge, reports, runs

RUNS_SHOWN = 30
SNAPSHOTS_SHOWN = 30
ROWS_PER_CHART = 12

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328;
       background: #f6f8fa; line-height: 1.45; }
header { background: #24292f; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #d0d7de; }
main { max-width: 1080px; margin: 0 auto; padding: 20px 28px 48px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px 20px; margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { flex: 1 1 150px; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px; background: #fff; }
.card b { display: block; font-size: 20px; }
.card span { color: #57606a; font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
.tone { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 12px; font-weight: 600;
        color: #fff; background: #8a8f98; white-space: nowrap; }
.tone-published { background: #1a7f37; } .tone-rejected { background: #cf222e; } .tone-failed { background: #9a6700; }
.tone-waiting { background: #0969da; } .tone-running { background: #8250df; }
tr.focus td { background: #fff8c5; }
.warning { border-left: 4px solid #E69F00; background: #fff8e6; padding: 8px 12px; margin: 8px 0; }
.muted { color: #57606a; }
.chart { width: 100%; max-width: 920px; height: auto; display: block; margin: 6px 0; }
details.data { margin: 4px 0 14px; font-size: 13px; }
details.data summary { cursor: pointer; color: #0969da; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; font-size: 12px; }
.url { word-break: break-all; }
"""


def style_hash() -> str:
    """The Content-Security-Policy source that allows the page's one inline style (and nothing else)."""
    return "'sha256-" + b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'"


def content_security_policy(frame_ancestors: str = "'none'") -> str:
    """What a server sends with the page: its own style, images from itself (none), no script at all."""
    return (f"default-src 'none'; style-src {style_hash()}; img-src 'self'; base-uri 'none'; form-action 'none'; "
            f"frame-ancestors {frame_ancestors}")


def _x(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return f"{value:%Y-%m-%d %H:%M} UTC"


def render(conn: psycopg.Connection, site: str, *, run_id: str | None = None, data_docs: bool = True) -> str:
    """The site's report as one HTML document; ``run_id`` puts that run in focus (funnel, coverage).

    :class:`NotFound` when the site has no run and no snapshot, or the run is not one of the site's.
    """
    from sitekb import report

    if not reports.site_exists(conn, site):
        known = ", ".join(reports.known_sites(conn)) or "none yet"
        raise NotFound(f"site {site!r} has no run and no snapshot (known sites: {known}); "
                       f"`sitekb run {site}` builds its first snapshot")
    run_rows = reports.runs_of_site(conn, site, RUNS_SHOWN)
    if run_id is not None and not any(r["run_id"] == run_id for r in run_rows):
        if reports.site_of_run(conn, run_id) != site:
            raise NotFound(f"run {run_id!r} is not a run of site {site!r}; the report lists its newest "
                           f"{RUNS_SHOWN} runs (`sitekb report {site}`)")
        run_rows += reports.runs_of_site(conn, site, 10_000)[RUNS_SHOWN:]
    focus = next((r for r in run_rows if r["run_id"] == run_id), None) if run_id else (run_rows[0] if run_rows else None)
    history = knowledge.snapshot_history(conn, site, limit=SNAPSHOTS_SHOWN)
    aliases = knowledge.aliases(conn, site)
    live = next((a for a in aliases if a["alias"] == DEFAULT_ALIAS), aliases[0] if aliases else None)
    summary = report.run_summary(conn, focus["run_id"]) if focus else None
    covered_id = (focus or {}).get("snapshot_id") or (live or {}).get("snapshot_id")
    covered = coverage_store.get(conn, covered_id) if covered_id else None
    spend = embeddings.spend_by_run(conn, site, RUNS_SHOWN)
    generated = runs.database_now(conn)

    body = [
        _cards(site, run_rows, live, history),
        _runs_section(run_rows, focus),
        _timeline_section(history),
        _funnel_section(summary, focus),
        _coverage_section(covered, covered_id),
        _spend_section(spend, run_rows),
        _engineers_section(site, run_rows, data_docs),
    ]
    title = f"sitekb report: {site}" + (f", run {focus['run_id']}" if run_id and focus else "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_x(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_x(title)}</h1><p>What sitekb made of the site, run by run: verdicts, snapshots, "
        f"what was left out, what the knowledge covers, what it cost. Generated {_x(_when(generated))}.</p></header>"
        "<main>" + "".join(body) + "</main></body></html>\n"
    )


# -- sections ---------------------------------------------------------------

def _cards(site: str, run_rows: list[dict], live: dict | None, history: list[dict]) -> str:
    newest = run_rows[0] if run_rows else None
    live_snap = next((s for s in history if live and s["snapshot_id"] == live["snapshot_id"]), None)
    golden = (live_snap or {}).get("quality", {}).get("golden") if live_snap else None
    cards = [
        (f"#{live['snapshot_id']}" if live else "none", f"live snapshot ({live['alias']})" if live else "nothing published"),
        ((live_snap or {}).get("counts", {}).get("documents", "–"), "pages live"),
        ((live_snap or {}).get("counts", {}).get("chunks", "–"), "chunks live"),
        (f"{golden['hits']}/{golden['asked']}" if golden and golden.get("asked") else "–", "golden questions answered"),
        (newest["status"] if newest else "–", "newest run" + (f", {_when(newest['started_at'])}" if newest else "")),
    ]
    return ('<section id="overview"><h2>' + _x(site) + ' at a glance</h2><div class="cards">'
            + "".join(f'<div class="card"><b>{_x(v)}</b><span>{_x(k)}</span></div>' for v, k in cards)
            + "</div></section>")


def _runs_section(run_rows: list[dict], focus: dict | None) -> str:
    rows = []
    for r in run_rows:
        verdict: Verdict = of_run(r)
        snap = f"#{r['snapshot_id']}" if r["snapshot_id"] else "–"
        klass = ' class="focus"' if focus and r["run_id"] == focus["run_id"] else ""
        rows.append(f'<tr id="run-{_x(r["run_id"])}" data-run-id="{_x(r["run_id"])}"{klass}>'
                    f'<td>{_x(_when(r["started_at"]))}<div class="muted">{_x(r["run_id"])}</div></td>'
                    f'<td>{_x(snap)}</td><td><span class="tone tone-{_x(verdict.tone)}">{_x(verdict.tone)}</span></td>'
                    f'<td class="verdict">{_x(verdict.text)}</td></tr>')
    table = ('<table id="verdicts"><thead><tr><th>Run</th><th>Snapshot</th><th>Outcome</th><th>What decided it</th>'
             '</tr></thead><tbody>' + ("".join(rows) or '<tr><td colspan="4" class="muted">No run yet.</td></tr>')
             + "</tbody></table>")
    return f'<section id="runs"><h2>Runs and their verdicts</h2>{table}</section>'


def _timeline_section(history: list[dict]) -> str:
    if not history:
        return '<section id="timeline"><h2>Snapshot timeline</h2><p class="muted">No snapshot yet.</p></section>'
    points = []
    for s in reversed(history):
        golden = (s.get("quality") or {}).get("golden") or {}
        share = golden["hits"] / golden["asked"] if golden.get("asked") else None
        points.append(charts.TimelinePoint(
            label=f"#{s['snapshot_id']}", sublabel=f"{s['created_at']:%m-%d %H:%M}", state=s["state"],
            pages=int(s["counts"].get("documents") or 0), chunks=int(s["counts"].get("chunks") or 0),
            golden=share, golden_text=f"{golden['hits']}/{golden['asked']}" if golden.get("asked") else "",
            note=", ".join(s.get("aliases") or [])))
    published = sum(1 for p in points if p.state in ("published", "retired"))
    rejected = sum(1 for p in points if p.state == "rejected")
    desc = (f"{len(points)} snapshots from #{history[-1]['snapshot_id']} to #{history[0]['snapshot_id']}: "
            f"{published} published, {rejected} rejected. The newest has {points[-1].pages} pages and "
            f"{points[-1].chunks} chunks" + (f", golden {points[-1].golden_text}" if points[-1].golden_text else "")
            + ".")
    svg = charts.timeline_chart("chart-timeline", "Snapshot timeline: pages, chunks and golden score", points,
                                desc=desc)
    table = charts.data_table("Snapshots", ("Snapshot", "Created", "State", "Pages", "Chunks", "Golden", "Aliases"),
                              [(p.label, p.sublabel, p.state, p.pages, p.chunks, p.golden_text or "–", p.note)
                               for p in reversed(points)], numeric=(3, 4))
    return f'<section id="timeline"><h2>Snapshot timeline</h2>{svg}{table}</section>'


def _funnel_section(summary: dict | None, focus: dict | None) -> str:
    if summary is None:
        return ""
    excluded = sum((summary.get("excluded") or {}).values())
    errors = sum((summary.get("crawl_errors") or {}).values())
    snapshot_pages = int(((focus or {}).get("snapshot_counts") or {}).get("documents") or 0)
    published = (focus or {}).get("snapshot_state") in ("published", "retired") or bool(summary.get("aliases"))
    rows = [
        ("Crawled (fetched or not modified)", summary["pages_crawled"], f"{errors} errors" if errors else ""),
        ("Excluded by rule", excluded, _counts(summary.get("excluded") or {})),
        ("Quarantined by the quality checks", summary["quarantined"], ""),
        ("Accepted documents", summary["documents"], ""),
        ("Pages in the snapshot", snapshot_pages,
         "published" if published else (f"snapshot {summary['snapshot_state']}" if summary["snapshot_state"] else
                                        "no snapshot")),
    ]
    colours = [charts.BLUE, charts.GREY, charts.RED, charts.SKY, charts.GREEN if published else charts.ORANGE]
    peak = max(r[1] for r in rows) or 1
    desc = "; ".join(f"{label}: {value}" for label, value, _ in rows) + "."
    svg = charts.hbar_chart("chart-funnel", f"From crawl to snapshot: run {summary['run_id']}", rows,
                            x_label="pages", desc=desc, max_value=peak, value_format=charts.number, colours=colours,
                            label_width=250)
    quarantined = summary.get("quarantined_urls") or {}
    detail = ""
    if quarantined:
        items = "".join(f'<li><span class="url">{_x(url)}</span>: {_x(", ".join(checks))}</li>'
                        for url, checks in sorted(quarantined.items())[:50])
        detail = f"<h3>Quarantined pages</h3><ul>{items}</ul>"
    table = charts.data_table("Funnel", ("Step", "Pages", "Detail"), rows, numeric=(1,))
    return f'<section id="funnel"><h2>Funnel of run {_x(summary["run_id"])}</h2>{svg}{table}{detail}</section>'


def _coverage_section(record: dict | None, snapshot_id: int | None) -> str:
    head = f'<section id="coverage"><h2>Coverage of snapshot #{_x(snapshot_id)}</h2>' if snapshot_id else \
        '<section id="coverage"><h2>Coverage</h2>'
    if record is None:
        hint = (f"Its coverage was not computed (built before sitekb computed coverage): "
                f"<code>sitekb coverage --snapshot {_x(snapshot_id)}</code> computes it.") if snapshot_id else \
            "No snapshot yet."
        return head + f'<p class="muted">{hint}</p></section>'
    limit = record["max_section_share"]
    parts = [head, f'<p class="muted">{record["chunks"]} chunks of {record["pages"]} pages. A section is the '
                   f'first folder of a page\'s URL (<code>/blog/</code>; <code>/</code> for pages at the root).</p>']
    parts += [f'<p class="warning"><b>Warning:</b> {_x(w)}</p>' for w in record.get("warnings") or []]
    sections = record["sections"][:ROWS_PER_CHART]
    parts.append(charts.hbar_chart(
        "chart-sections", "Share of chunks per site section",
        [(s["name"], s["share"], f"{s['chunks']} chunks, {s.get('pages', '?')} pages") for s in sections],
        x_label="share of the snapshot's chunks", max_value=1.0, threshold=limit,
        threshold_label=f"limit {limit:.0%}",
        desc=f"{len(record['sections'])} sections; the largest, {sections[0]['name'] if sections else '-'}, holds "
             f"{sections[0]['share'] if sections else 0:.0%} of the chunks; the limit is {limit:.0%}."))
    parts.append(charts.data_table("Sections", ("Section", "Share", "Chunks", "Pages"),
                                   [(s["name"], f"{s['share']:.1%}", s["chunks"], s.get("pages"))
                                    for s in record["sections"]], numeric=(1, 2, 3)))
    clusters = record.get("clusters") or []
    if clusters:
        parts.append(charts.hbar_chart(
            "chart-topics", "Share of chunks per topic (clusters of their embeddings)",
            [(c["label"], c["share"], f"{c['chunks']} chunks") for c in clusters],
            x_label="share of the snapshot's chunks", max_value=1.0, colour=charts.PURPLE, label_width=300,
            desc=f"{len(clusters)} topics, each named by its most distinctive words; the largest is "
                 f"{clusters[0]['label']!r} with {clusters[0]['share']:.0%} of the chunks."))
        parts.append(charts.data_table("Topics", ("Topic", "Share", "Chunks", "Pages it comes from (examples)"),
                                       [(c["label"], f"{c['share']:.1%}", c["chunks"], "; ".join(c.get("titles") or []))
                                        for c in clusters], numeric=(1, 2)))
    for key, heading, colour in (("tags", "tag", charts.SKY), ("languages", "language", charts.GREEN)):
        rows = record.get(key) or []
        if not rows:
            continue
        parts.append(charts.hbar_chart(
            f"chart-{key}", f"Share of chunks per {heading}",
            [(r["name"], r["share"], f"{r['chunks']} chunks") for r in rows[:ROWS_PER_CHART]],
            x_label="share of the snapshot's chunks" + (" (a page may have several tags)" if key == "tags" else ""),
            max_value=1.0, colour=colour,
            desc=f"{len(rows)} {key}; the largest, {rows[0]['name']}, covers {rows[0]['share']:.0%} of the chunks."))
        parts.append(charts.data_table(key.capitalize(), (heading.capitalize(), "Share", "Chunks"),
                                       [(r["name"], f"{r['share']:.1%}", r["chunks"]) for r in rows], numeric=(1, 2)))
    return "".join(parts) + "</section>"


def _spend_section(spend: list[dict], run_rows: list[dict]) -> str:
    if not spend:
        return ('<section id="spend"><h2>Embedding spend per run</h2><p class="muted">No run has embedded anything '
                'yet (a run whose chunks were all cached costs nothing and records nothing).</p></section>')
    started = {r["run_id"]: r["started_at"] for r in run_rows}
    rows = list(reversed(spend))
    labels = [f"{started[r['run_id']]:%m-%d %H:%M}" if r["run_id"] in started else r["run_id"][-12:] for r in rows]
    paid = any(r["usd"] > 0 for r in rows)
    if paid:
        series = charts.Series("USD", [r["usd"] for r in rows], charts.BLUE,
                               labels=[charts.dollars(r["usd"]) for r in rows])
        title, y_label, fmt = "Embedding spend per run (USD)", "USD", charts.dollars
    else:
        series = charts.Series("tokens", [r["tokens"] for r in rows], charts.BLUE)
        title, y_label, fmt = "Tokens embedded per run (the local model costs $0)", "tokens", charts.number
    total = sum(r["usd"] for r in rows)
    desc = (f"{len(rows)} runs embedded {sum(r['inputs'] for r in rows)} texts, {sum(r['tokens'] for r in rows)} "
            f"tokens, ${total:.4f} in all; the newest cost ${rows[-1]['usd']:.4f}.")
    svg = charts.bar_chart("chart-spend", title, labels, [series], y_label=y_label, desc=desc, value_format=fmt)
    table = charts.data_table("Spend", ("Run", "Model", "Requests", "Texts", "Tokens", "USD"),
                              [(r["run_id"], r["model"], r["requests"], r["inputs"], r["tokens"], f"{r['usd']:.6f}")
                               for r in spend], numeric=(2, 3, 4, 5))
    return f'<section id="spend"><h2>Embedding spend per run</h2>{svg}{table}</section>'


def _engineers_section(site: str, run_rows: list[dict], data_docs: bool) -> str:
    items = []
    for r in run_rows:
        path = ((r.get("snapshot_quality") or {}).get("data_docs"))
        if data_docs and path and Path(path).is_file():
            items.append(f'<li>run {_x(r["run_id"])}: <a href="{_x(Path(path).resolve().as_uri())}">Great '
                         f'Expectations Data Docs</a> <span class="muted url">{_x(path)}</span></li>')
    docs = (f"<ul>{''.join(items)}</ul>" if items else
            '<p class="muted">No run of this site has Great Expectations Data Docs on this machine '
            '(they are written under SITEKB_HOME/data_docs when the site\'s <code>quality.data_docs</code> is on).</p>')
    commands = "".join(f"<li><code>{_x(c)}</code></li>" for c in (
        f"sitekb snapshots list --site {site}", "sitekb snapshots show ID", "sitekb snapshots diff A B",
        f"sitekb coverage --site {site} --json", f"sitekb quarantine --site {site}",
        f"sitekb embeddings spend --site {site}"))
    return (f'<section id="engineers"><h2>For engineers</h2><h3>Data Docs</h3>{docs}'
            f"<h3>The records behind this page</h3><ul>{commands}</ul></section>")


def _counts(values: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
