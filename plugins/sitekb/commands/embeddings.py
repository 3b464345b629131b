"""`sitekb embeddings`: what embedding cost each run, and what the cache holds.

    sitekb embeddings spend [--site S] [--limit N] [--json]
    sitekb embeddings cache [--json]
    sitekb embeddings prune [--older-than DAYS] [--dry-run] [--json]

``spend`` reads ``sitekb.embedding_spend`` (written with every batch a run
embeds, over all attempts of the run); ``cache`` counts
``sitekb.embedding_cache`` by model and dimensions. The bill of a run that has
not embedded yet is ``sitekb run SITE --dry-run``. ``prune`` drops cached
embeddings and full-text vectors that no staged chunk uses (sitekb.caches).
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect, print_json
from sitekb.settings import Settings


def read_spend(conn, site: str | None, limit: int) -> list[dict]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT s.run_id, r.site, s.provider, s.model, s.dimensions, s.requests, s.inputs, s.tokens,
                      s.usd::float8 AS usd, s.updated_at
               FROM sitekb.embedding_spend s LEFT JOIN sitekb.runs r USING (run_id)
               WHERE %(site)s::text IS NULL OR r.site = %(site)s
               ORDER BY s.updated_at DESC LIMIT %(limit)s""",
            {"site": site, "limit": limit},
        ).fetchall()


def read_cache(conn) -> list[dict]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT model, dimensions, count(*) AS vectors, min(created_at) AS oldest, max(created_at) AS newest
               FROM sitekb.embedding_cache GROUP BY model, dimensions ORDER BY model, dimensions"""
        ).fetchall()


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import caches

    with connect(settings) as conn:
        result = caches.prune(conn, args.older_than, dry_run=args.dry_run)
    if args.json:
        print_json(result)
    else:
        what = "would drop" if args.dry_run else "dropped"
        print(f"{what} {result['embeddings']} cached embeddings and {result['fulltext_vectors']} full-text vectors "
              f"that no staged chunk uses and are older than {args.older_than} days")
    return 0


def cmd_embeddings(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        rows = read_spend(conn, args.site, args.limit) if args.action == "spend" else read_cache(conn)
    if args.json:
        print_json(rows)
    elif args.action == "spend":
        print(f"{'run':44} {'model':24} {'requests':>8} {'inputs':>8} {'tokens':>10} {'usd':>10}")
        for r in rows:
            print(f"{r['run_id'][:44]:44} {r['model'][:24]:24} {r['requests']:>8} {r['inputs']:>8} "
                  f"{r['tokens']:>10} {r['usd']:>10.4f}")
        print(f"{len(rows)} runs, ${sum(r['usd'] for r in rows):.4f} in all")
    else:
        for r in rows:
            print(f"{r['model']:28} {r['dimensions']:>5} dims  {r['vectors']:>8} vectors  newest {r['newest']:%Y-%m-%d %H:%M}")
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
    prune.add_argument("--older-than", type=int, default=30, metavar="DAYS",
                       help="only entries created more than DAYS ago (default 30)")
    prune.add_argument("--dry-run", action="store_true", help="count what would go, drop nothing")
    prune.add_argument("--json", action="store_true", help="machine-readable output")
    prune.set_defaults(func=cmd_prune)
