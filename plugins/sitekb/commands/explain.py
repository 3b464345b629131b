"""`sitekb explain`: why an answer, passage by passage.

    sitekb explain QUESTION [--site S] [--alias A | --snapshot N] [--mode M] [-k K] [--json]
    sitekb explain --chunk ID [--site S] [--alias A | --snapshot N] [--json]

Runs the one query path and prints, for each passage, its page and fetch, what
the extractor cut, the versions that made it, the snapshot and who published
it, the quality checks, approvals and corrections, and the page's history
(:mod:`sitekb.explain`, through ``sitekb_api.explain``).
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect, print_json
from sitekb.errors import ConfigError
from sitekb.passages import DEFAULT_ALIAS, DEFAULT_MODE, MODES
from sitekb.settings import Settings


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import explain

    if (args.question is None) == (args.chunk is None):
        raise ConfigError("give a question or --chunk ID (one of them): "
                          "e.g. sitekb explain \"How are leads scored?\" or sitekb explain --chunk 3f2a...")
    if args.snapshot is not None and args.alias is not None:
        raise ConfigError("give --alias or --snapshot, not both")
    with connect(settings) as conn:
        site = args.site
        if site is None and args.snapshot is None:
            from sitekb.commands.snapshots import _which_site

            site = _which_site(conn, None)
        # An operator may look into a pinned snapshot that is built but not published, as `sitekb search` may.
        unpublished = args.snapshot is not None
        if args.chunk is not None:
            result = explain.explain_chunk(conn, args.chunk, site=site, alias=args.alias, snapshot_id=args.snapshot,
                                           unpublished=unpublished)
        else:
            result = explain.explain(conn, settings, args.question, site=site, k=args.k, mode=args.mode,
                                     alias=args.alias, snapshot_id=args.snapshot, unpublished=unpublished)
    if args.json:
        print_json(result.as_dict())
    else:
        print(explain.format_explanation(result))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", help="why an answer: each passage's page, fetch, extraction, versions, snapshot, checks, history",
        description="Search as `sitekb search` does and explain every passage found: the page and when it was "
                    "fetched (ETag, Last-Modified), its content hash, what the extractor cut, the extractor, "
                    "chunker and embedding versions, the snapshot and who published it, the quality checks, any "
                    "approval or correction, and the page's history across kept snapshots.",
        epilog="examples:\n  sitekb explain \"How many points does a demo request add?\" --site demo -k 3\n"
               "  sitekb explain --chunk 3f2a9c0d1e2b4a5c6d7e8f90 --site demo --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("question", nargs="?", help="the question, in plain words")
    parser.add_argument("--chunk", metavar="ID", help="explain this one chunk (an id from a search) instead")
    parser.add_argument("--site", help="the site (may be left out when only one site has a published snapshot)")
    parser.add_argument("--alias", help=f"alias to read (default: {DEFAULT_ALIAS})")
    parser.add_argument("--snapshot", type=int, help="pin a snapshot id instead of an alias")
    parser.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help=f"search mode (default {DEFAULT_MODE})")
    parser.add_argument("-k", "--k", type=int, default=5, help="how many passages (1-100, default 5)")
    parser.add_argument("--json", action="store_true", help="the explanation as JSON (what POST /v1/explain returns)")
    parser.set_defaults(func=cmd_explain)
