"""`sitekb embeddings`: what embedding cost each run, and what the cache holds.

    sitekb embeddings spend [--site S] [--limit N] [--json]
    sitekb embeddings cache [--json]
    sitekb embeddings prune [--older-than DAYS] [--dry-run] [--json]

``spend`` reads ``sitekb.embedding_spend`` (written with every batch a run
embeds, over all attempts of the run); ``cache`` counts
``sitekb.embedding_cache`` by model and dimensions. The bill of a run that has
not embedded yet is ``sitekb run SITE --dry-run``. ``prune`` drops cached
embeddings and full-text vectors that no staged chunk uses and that are past
a grace period: published snapshots keep their own copies, so an entry only
saves work if some future run has the same content (after publishing, only
the latest run of each site keeps staged chunks; the grace period covers runs
in flight).
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect, print_json, print_table
from sitekb.errors import ConfigError
from sitekb.settings import Settings

DEFAULT_GRACE_DAYS = 30


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import embeddings, fulltext

    if args.older_than < 0:
        raise ConfigError("--older-than is a number of days, 0 or more")
    with connect(settings) as conn:
        result = {"embeddings": embeddings.prune(conn, args.older_than, dry_run=args.dry_run),
                  "fulltext_vectors": fulltext.prune(conn, args.older_than, dry_run=args.dry_run),
                  "older_than_days": args.older_than, "dry_run": args.dry_run}
    if args.json:
        print_json(result)
    else:
        what = "would drop" if args.dry_run else "dropped"
        print(f"{what} {result['embeddings']} cached embeddings and {result['fulltext_vectors']} full-text vectors "
              f"that no staged chunk uses and are older than {args.older_than} days")
    return 0


def cmd_embeddings(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import embeddings

    with connect(settings) as conn:
        rows = (embeddings.spend_by_run(conn, args.site, args.limit) if args.action == "spend"
                else embeddings.cache_by_model(conn))
    if args.json:
        print_json(rows)
    elif args.action == "spend":
        print_table(("run", "model", "requests", "inputs", "tokens", "usd"),
                    [(r["run_id"], r["model"], r["requests"], r["inputs"], r["tokens"], f"{r['usd']:.4f}")
                     for r in rows], right=("requests", "inputs", "tokens", "usd"))
        print(f"{len(rows)} runs, ${sum(r['usd'] for r in rows):.4f} in all")
    else:
        print_table(("model", "dimensions", "vectors", "newest"),
                    [(r["model"], r["dimensions"], r["vectors"], f"{r['newest']:%Y-%m-%d %H:%M}") for r in rows],
                    right=("dimensions", "vectors"))
        print(f"{sum(r['vectors'] for r in rows)} cached vectors")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "embeddings", help="embedding spend per run and what the embedding cache holds",
        description="What embedding cost each run (over all its attempts) and the cache's size per model.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    spend = sub.add_parser("spend", help="requests, inputs, tokens and dollars of each run, newest first")
    spend.add_argument("--site", help="only this site's runs")
    spend.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    spend.add_argument("--json", action="store_true", help="machine-readable output")
    cache = sub.add_parser("cache", help="cached vectors per model and dimensions")
    cache.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_embeddings)
    prune = sub.add_parser("prune", help="drop cached embeddings and full-text vectors no staged chunk uses",
                           description="Published snapshots keep their own vectors; the caches only save work "
                                       "when content comes back. Entries younger than the grace period stay.")
    prune.add_argument("--older-than", type=int, default=DEFAULT_GRACE_DAYS, metavar="DAYS",
                       help=f"only entries created more than DAYS ago (default {DEFAULT_GRACE_DAYS})")
    prune.add_argument("--dry-run", action="store_true", help="count what would go, drop nothing")
    prune.add_argument("--json", action="store_true", help="machine-readable output")
    prune.set_defaults(func=cmd_prune)
