"""`sitekb coverage` and `sitekb report`: what a snapshot covers, and a site's HTML report.

    sitekb coverage [--site S] [--snapshot N | --alias A] [--json]
    sitekb report SITE [--run RUN_ID] [--out FILE] [--open]

``coverage`` reads the coverage record stored with the snapshot (the build
stage writes it; for a snapshot built before, it is computed now from the
snapshot's table and stored). The site's ``coverage.max_section_share``
decides which sections are warned about. ``report`` writes one
self-contained HTML file (inline SVG charts, no script, nothing fetched):
verdict per run, snapshot timeline, funnel, coverage, spend.

Settings read (resolved by the CLI): the database settings every command
reads; ``Settings.home`` for the default report file
(``SITEKB_HOME/reports/SITE.html``); the site config (``Settings.sites_dir``)
for the coverage limit, when the site has a config file.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path

from sitekb.commands import connect, print_json
from sitekb.errors import ConfigError
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings


def _section_limit(site: str, settings: Settings) -> float | None:
    """The site config's coverage limit, or None when the site has no config file here (the stored one stands)."""
    from sitekb.sites import load_site

    try:
        return load_site(site, sites_dir=settings.sites_dir).coverage.max_section_share
    except ConfigError:
        return None


def cmd_coverage(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import coverage
    from sitekb.commands.snapshots import snapshot_of

    with connect(settings) as conn:
        snap = snapshot_of(conn, args.site, args.snapshot, args.alias)
        record = coverage.of_snapshot(conn, snap, _section_limit(snap.site, settings))
    if args.json:
        print_json(record)
    else:
        print(coverage.format_coverage(record, limit=args.limit))
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.report_html import page

    with connect(settings) as conn:
        html = page.render(conn, args.site, run_id=args.run)
    out = Path(args.out) if args.out else settings.home / "reports" / f"{args.site}.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror}; choose another file with --out") from None
    if args.json:
        print_json({"site": args.site, "run": args.run, "path": str(out.resolve()), "bytes": len(html.encode())})
    else:
        print(f"report of {args.site} written to {out} ({len(html) // 1024} kB, one self-contained file)")
    if args.open:
        if not webbrowser.open(out.resolve().as_uri()):
            print(f"no browser to open here: open {out.resolve().as_uri()} yourself", file=sys.stderr)
    return 0


def register(sub) -> None:
    cov = sub.add_parser(
        "coverage", help="what a snapshot covers: share of chunks per section, topic, tag and language",
        description="The share of a snapshot's chunks per site section (first URL path segment), topic cluster "
                    "(named by its most distinctive words), tag and language, and a warning when one section "
                    "holds more than the site's coverage.max_section_share (default 0.6). Reads the record the "
                    "build stage stored (computing it for an older snapshot).",
        epilog="examples:\n  sitekb coverage --site demo\n  sitekb coverage --snapshot 12 --json\n"
               "  sitekb coverage --site demo --alias staging",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cov.add_argument("--site", help="the site (may be left out when only one site has a published snapshot)")
    cov.add_argument("--snapshot", type=int, metavar="N", help="this snapshot (any built one, rejected too)")
    cov.add_argument("--alias", metavar="A", help=f"the snapshot this alias points to (default: {DEFAULT_ALIAS})")
    cov.add_argument("--limit", type=int, default=10, help="rows listed per kind (default 10; --json lists all)")
    cov.add_argument("--json", action="store_true", help="the whole coverage record as JSON")
    cov.set_defaults(func=cmd_coverage)

    rep = sub.add_parser(
        "report", help="a site's HTML report: verdicts, snapshot timeline, funnel, coverage, spend (inline SVG)",
        description="Write one self-contained HTML file (no script, no network) with the verdict of every run in "
                    "plain words, the snapshot timeline, the funnel of the newest run (or --run), the coverage of "
                    "its snapshot and the embedding spend per run. `sitekb serve` serves it at /report/SITE.",
        epilog="examples:\n  sitekb report demo --open\n  sitekb report demo --out /tmp/demo.html\n"
               "  sitekb report demo --run demo__cli__20261201T0300",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("site", help="the site's name")
    rep.add_argument("--run", metavar="RUN_ID", help="put this run in focus (funnel, coverage of its snapshot)")
    rep.add_argument("--out", metavar="FILE", help="where to write it (default: SITEKB_HOME/reports/SITE.html)")
    rep.add_argument("--open", action="store_true", help="open it in a browser afterwards")
    rep.add_argument("--json", action="store_true", help="say where it was written as JSON (path, bytes)")
    rep.set_defaults(func=cmd_report)
