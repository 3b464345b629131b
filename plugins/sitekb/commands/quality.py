"""`sitekb quarantine`: what the quality gate held back, and approving a page anyway.

    sitekb quarantine [--site S] [--snapshot N | --run R] [--json]   what the gate held back (and approvals)
    sitekb quarantine approve URL --reason TEXT [--site S] [--by NAME]
    sitekb quarantine approvals [--site S] [--json]    every recorded approval

Listings describe the live snapshot of each site, or the snapshot or run named
(:mod:`sitekb.heldback`). An approval holds while
the page's extracted text stays the same (see :mod:`sitekb.quarantine`).
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect as _connect
from sitekb.commands import print_json as _print_json
from sitekb.settings import Settings


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.commands import ledgers
    from sitekb.heldback import QUARANTINE_KINDS

    found = ledgers.load(args, settings, QUARANTINE_KINDS)
    if args.json:
        _print_json([ledger.as_dict() for ledger in found])
        return 0
    ledgers.print_ledgers(found, noun="quarantine",
                          hint="Approve one with `sitekb quarantine approve URL --reason ...`.")
    return 0


def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.quality import quarantine

    with _connect(settings) as conn:
        approval = quarantine.approve(conn, args.url, args.reason, site=args.site or None, approved_by=args.by)
    if args.json:
        _print_json(approval)
    else:
        checks = ", ".join(f["check"] for f in approval["failures"]) or "none"
        print(f"approved {approval['url']} ({approval['site']}, content {approval['content_hash'][:12]}, "
              f"failed: {checks}).\nThe next run of {approval['site']} publishes it as long as the page's text "
              "is unchanged; a changed page is checked again.")
    return 0


def cmd_approvals(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.quality import quarantine

    with _connect(settings) as conn:
        rows = quarantine.list_approvals(conn, args.site)
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        print(f"{r['approved_at']:%Y-%m-%d %H:%M}  {r['site']:10} {r['url']}  by {r['approved_by']}: {r['reason']} "
              f"(content {r['content_hash'][:12]})")
    print(f"{len(rows)} approvals")
    return 0


def register(subparsers) -> None:
    from sitekb.commands import ledgers

    qua = subparsers.add_parser(
        "quarantine", help="documents held back by the quality checks, with every failed check; approve one",
        description="List the documents the quality gate held back from the site's live snapshot (or --snapshot "
                    "/ --run, a rejected run too), one per URL with every failed check in words, and those an "
                    "approval let through; or approve one so the next run publishes it.",
        epilog="examples:\n  sitekb quarantine --site demo\n  sitekb quarantine --run demo-20261201T0300 --json\n"
               "  sitekb quarantine approve https://example.com/webinar --reason 'transcript checked by ops'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ledgers.add_target_arguments(qua)
    qua.set_defaults(func=cmd_quarantine)
    actions = qua.add_subparsers(dest="action", metavar="[approve|approvals]")

    approve = actions.add_parser(
        "approve", help="let a quarantined page through while its text is unchanged",
        description="Record a content owner's approval of a quarantined document. It is tied to the document's "
                    "content hash: the page is accepted by every later run until its text changes.",
    )
    approve.add_argument("url", help="the document's URL exactly as `sitekb quarantine` lists it")
    approve.add_argument("--reason", required=True, help="why the page may be published despite the failed checks")
    approve.add_argument("--site", help="the site, when the URL belongs to several")
    approve.add_argument("--by", help="who approves (default: the current user)")
    approve.add_argument("--json", action="store_true", help="print the recorded approval as JSON")
    approve.set_defaults(func=cmd_approve)

    approvals = actions.add_parser("approvals", help="every recorded approval: who, when, why, for which text")
    approvals.add_argument("--site", help="only this site")
    approvals.add_argument("--json", action="store_true", help="machine-readable output")
    approvals.set_defaults(func=cmd_approvals)

    from sitekb.commands.corrections import register_export

    register_export(actions)  # `quarantine export`, for `sitekb corrections add`
