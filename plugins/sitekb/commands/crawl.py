"""`sitekb crawl-stats`: what each crawl fetched, skipped and why, what failed, what it cost.

    sitekb crawl-stats [--site S] [--limit N] [--json]

Reads ``sitekb.crawl_stats`` (written by every crawl, newest first; :mod:`sitekb.store.ledger`). The
exclusion ledger, URL by URL, is ``sitekb exclusions``.
"""

from __future__ import annotations

import argparse
from datetime import timezone

from sitekb.commands import connect, print_json
from sitekb.settings import Settings


def _counts(data: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(data.items())) or "none"


def cmd_crawl_stats(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import ledger

    with connect(settings) as conn:
        rows = ledger.crawls(conn, args.site, args.limit)
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        kind = "full" if r["full_crawl"] else "incremental"
        finished = r["finished_at"].astimezone(timezone.utc)
        print(f"{r['run_id']}  {r['site']}  {kind} crawl, {finished:%Y-%m-%d %H:%M} UTC, "
              f"{r['seconds']:.1f}s, {r['requests']} requests, {r['bytes'] / 1024:.0f} KiB")
        print(f"  fetched {r['fetched']}, not modified {r['not_modified']} "
              f"({r['unchanged_by_sitemap']} by sitemap lastmod), retries {r['retries']}")
        print(f"  excluded   {_counts(r['excluded'])}")
        print(f"  skipped    {_counts(r['skipped'])}")
        print(f"  errors     {_counts(r['errors'])}")
        print(f"  bad input  {_counts(r['bad_input'])}")
        if r["robots"]:
            print(f"  robots.txt {_counts(r['robots'])}")
    print(f"{len(rows)} crawls" + (f" of {args.site}" if args.site else "") + " (newest first)")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "crawl-stats", help="per-run crawl statistics: fetched, not modified, excluded by rule, errors, bytes",
        description="Statistics of recent crawls, newest first: pages fetched and not modified, exclusions "
                    "and skips by rule, errors by kind, bad input, bytes and seconds.",
    )
    parser.add_argument("--site", help="only this site")
    parser.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(func=cmd_crawl_stats)
