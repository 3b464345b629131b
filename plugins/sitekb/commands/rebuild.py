"""`sitekb rebuild SITE`: a new snapshot from the pages already crawled, with the site config as it is now.

    sitekb rebuild SITE [--alias A] [--take-over] [--dry-run] [--json]

After a pivot (an exclusion pattern, a label, a quality threshold, a messaging
rule or the chunking changed in the site file) a rebuild runs every stage on
the pages the site's newest crawl kept, without a request to the site
(:func:`sitekb.engine.rebuild`, :mod:`sitekb.restage`), and prints the same
summary as `sitekb run`.
"""

from __future__ import annotations

import argparse
import logging
import time

from sitekb.commands import connect, print_json
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings

EXAMPLES = """examples:
  sitekb rebuild demo                  after adding an exclusion or a label to dags/sites/demo.yaml
  sitekb rebuild acme --dry-run        what it would stage, chunk and embed; publishes nothing
  sitekb rebuild acme --alias staging  publish the rebuilt snapshot to another alias
  sitekb rebuild acme --json           the run summary as JSON
"""


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import engine, report
    from sitekb.cli import _progress_bar
    from sitekb.sites import resolve_site

    if args.log_level is None:
        # A rebuild is a run: its stages say what they did, as `sitekb run`'s do.
        logging.getLogger("sitekb").setLevel(logging.INFO)
    config = resolve_site(args.site, settings)
    source, config = engine.rebuild_plan(settings, config)
    if args.dry_run:
        result = {"rebuild_of": source, **engine.dry_run(settings, config, rebuild_of=source)}
        if args.json:
            print_json(result)
        else:
            for key, value in result.items():
                print(f"{key:16} {value}")
        return 0
    started = time.time()
    with _progress_bar() as progress:
        run_id = engine.rebuild(settings, config, alias=args.alias, take_over=args.take_over, progress=progress)
    with connect(settings) as conn:
        summary = report.run_summary(conn, run_id)
    summary["wall_seconds"] = round(time.time() - started, 2)
    summary["rebuild_of"] = source
    if args.json:
        print_json(summary)
    else:
        print(f"rebuilt from the pages of run {source}, as the site config is now; no page was fetched")
        print(report.format_summary(summary))
        if summary["status"] == "succeeded" and summary["snapshot_state"] == "validated":
            print(f"site {config.name} requires approval: `sitekb publish {summary['snapshot_id']} --alias "
                  f"{args.alias} --reason ...` publishes the snapshot")
    return 0 if summary["status"] == "succeeded" else 1


def register(subparsers) -> None:
    rebuild = subparsers.add_parser(
        "rebuild", help="a new snapshot from the pages already crawled, with the site config as it is now",
        description="Build and publish a new snapshot of SITE from the pages its newest crawl kept, without "
                    "crawling: the current config's URL patterns, content types and opt-out labels and robots "
                    "values are applied to the stored pages again (robots.txt, TDM files, canonical copies and "
                    "HTTP errors keep the crawl's verdict), then extract, validate, chunk, embed (only chunk "
                    "texts the cache lacks), build, evaluate and publish run as in `sitekb run`, with the same "
                    "gate. Refused when nothing was crawled yet or another run of the site is running.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rebuild.add_argument("site", help="site config: a name under dags/sites/ (e.g. demo) or a YAML path")
    rebuild.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to publish to (default: {DEFAULT_ALIAS})")
    rebuild.add_argument("--take-over", action="store_true",
                         help="another run of the site still marked running is dead (killed elsewhere): mark it "
                              "failed and rebuild")
    rebuild.add_argument("--dry-run", action="store_true",
                         help="stage and chunk, then report the tokens to embed and the cost; publish nothing")
    rebuild.add_argument("--json", action="store_true", help="print the summary as JSON")
    rebuild.set_defaults(func=cmd_rebuild)
