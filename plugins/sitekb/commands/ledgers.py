"""`sitekb exclusions`: what the live snapshot leaves out and why, one line per URL, in words.

    sitekb exclusions [--site S] [--snapshot N | --run RUN_ID] [--kind K] [--rule R] [--all] [--json]

The quarantine listing (`sitekb quarantine`, :mod:`sitekb.commands.quality`)
is the same ledger's quality-gate part and prints through :func:`print_ledgers`.
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect as _connect
from sitekb.commands import print_json as _print_json
from sitekb.settings import Settings

EXCLUSION_KINDS = ("opt-out", "excluded", "limit", "not-found", "fetch-failed", "removed")

EXAMPLES = """examples:
  sitekb exclusions --site demo                 what the live snapshot leaves out, with the reason
  sitekb exclusions --site demo --kind opt-out  only the owner's opt-outs (labels, robots, TDM)
  sitekb exclusions --run demo-20261201T0300    what a run (a rejected one too) left out
  sitekb exclusions --site demo --all --json    everything, sitemaps and robots.txt included, as JSON
"""


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--site, --snapshot, --run, --json: which ledger a listing describes."""
    parser.add_argument("--site", help="only this site")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--snapshot", type=int, metavar="N", help="describe snapshot N (default: the live one)")
    which.add_argument("--run", metavar="RUN_ID", help="describe what this run held back (a rejected run too)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def load(args: argparse.Namespace, settings: Settings, kinds, include_noise: bool = False):
    from sitekb import heldback

    with _connect(settings) as conn:
        found = heldback.ledgers(conn, site=args.site, snapshot_id=args.snapshot, run_id=args.run,
                                 include_noise=include_noise)
    return [ledger.of_kinds(kinds) for ledger in found]


def print_ledgers(ledgers, *, noun: str, hint: str = "") -> None:
    """A block per site: what it describes, then one line per URL: kind, URL, reason."""
    for ledger in ledgers:
        where = f"snapshot {ledger.snapshot_id}, " if ledger.snapshot_id is not None else ""
        run = f"run {ledger.run_id}" if ledger.run_id else "no run"
        print(f"{ledger.site}: {noun} of {ledger.target} ({where}{run})")
        for entry in ledger.entries:
            print(f"  {entry.kind:12} {entry.url}")
            print(f"  {'':12} {entry.reason}")
        counts = ", ".join(f"{n} {kind}" for kind, n in ledger.counts().items()) or f"no {noun}"
        print(f"  {counts}")
        if ledger.unrecorded:
            print(f"  (and {ledger.unrecorded} more exclusions counted past the per-rule cap, not listed)")
        for newer in ledger.newer[:3]:
            state = newer["state"] or newer["status"]
            print(f"  note: a newer run, {newer['run_id']}, was {state}; `--run {newer['run_id']}` shows its {noun}")
        print()
    if hint:
        print(hint)


def cmd_exclusions(args: argparse.Namespace, settings: Settings) -> int:
    kinds = [args.kind] if args.kind else EXCLUSION_KINDS
    ledgers = load(args, settings, kinds, include_noise=args.all)
    if args.rule:
        for ledger in ledgers:
            ledger.entries = [e for e in ledger.entries if e.rule == args.rule]
    if args.json:
        _print_json([ledger.as_dict() for ledger in ledgers])
        return 0
    print_ledgers(ledgers, noun="exclusions")
    return 0


def register(subparsers) -> None:
    exc = subparsers.add_parser(
        "exclusions", help="what the live snapshot leaves out, one URL per line, with the reason in words",
        description="List the URLs the site's live snapshot (or --snapshot / --run) does not hold, each once, "
                    "with the newest reason its run recorded: the owner's opt-outs (labels, robots noai, "
                    "robots.txt, TDM reservations), config rules, crawl limits, pages not found, fetch "
                    "failures and pages removed since the previous snapshot. Sitemaps, feeds and robots.txt "
                    "stay out unless --all. The quality gate's part is `sitekb quarantine`.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(exc)
    exc.add_argument("--kind", choices=EXCLUSION_KINDS, help="only this kind of reason")
    exc.add_argument("--rule", help="only this crawl rule (label, robots-meta, robots-txt, tdm-reservation, "
                                    "canonical, excluded-pattern, max-pages, http-404, ...)")
    exc.add_argument("--all", action="store_true", help="include noise: sitemaps, feeds, robots.txt, images")
    exc.set_defaults(func=cmd_exclusions)
