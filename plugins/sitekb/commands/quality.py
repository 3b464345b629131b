"""`sitekb quarantine`: what the quality gate held back, and approving a page anyway.

    sitekb quarantine [--site S] [--json]              list quarantined (and approved) documents
    sitekb quarantine approve URL --reason TEXT [--site S] [--by NAME]
    sitekb quarantine approvals [--site S] [--json]    every recorded approval

Listings cover the latest validated run of each site. An approval holds while
the page's extracted text stays the same (see :mod:`sitekb.quarantine`).
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect as _connect
from sitekb.commands import print_json as _print_json
from sitekb.settings import Settings


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.quality import quarantine

    with _connect(settings) as conn:
        rows = quarantine.list_quarantined(conn, args.site)
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        state = "approved" if r["status"] == "accepted" else "quarantined"
        print(f"{r['site']:10} {state:11} {r['url']}")
        for f in r["failures"]:
            print(f"{'':23}{f['check']} = {f['value']}: {f['message']}")
        if r["approval_id"] is not None:
            print(f"{'':23}approved by {r['approved_by']} on {r['approved_at']:%Y-%m-%d}: {r['approval_reason']}")
    held = sum(1 for r in rows if r["status"] == "quarantined")
    print(f"{held} quarantined, {len(rows) - held} approved (latest run of each site). "
          "Approve one with `sitekb quarantine approve URL --reason ...`.")
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
    qua = subparsers.add_parser(
        "quarantine", help="documents held back by the quality checks, with every failed check; approve one",
        description="List the documents the quality gate quarantined in the latest run of each site, with every "
                    "failed check and its measured value, or approve one so the next run publishes it.",
    )
    qua.add_argument("--site", help="only this site")
    qua.add_argument("--json", action="store_true", help="machine-readable output")
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
