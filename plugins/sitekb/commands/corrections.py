"""`sitekb corrections` and `sitekb quarantine export`: a content owner's fixed text for a page.

    sitekb corrections add URL --file fixed.md --reason TEXT [--site S] [--by NAME] [--json]
    sitekb corrections list [--site S] [--all] [--json]
    sitekb corrections remove URL [--site S] [--reason TEXT] [--json]
    sitekb quarantine export [--site S] [--dir DIR] [--json]

A correction replaces the page's extracted text from the next run on while the
page stays as it was; it expires when the page changes (:mod:`sitekb.corrections`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sitekb.commands import connect, print_json, print_table
from sitekb.settings import Settings


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import corrections

    meta, markdown = corrections.read_file(args.file)
    with connect(settings) as conn:
        row = corrections.add(conn, args.url, markdown, args.reason, site=args.site, meta=meta, added_by=args.by)
    if args.json:
        print_json(row)
    else:
        print(f"correction {row['id']} of {row['url']} ({row['site']}, for text {row['content_hash'][:12]}) recorded. "
              f"The next run of {row['site']} (or `sitekb run {row['site']} --from extract`) uses it while the page "
              "is unchanged; a changed page expires it.")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import corrections

    with connect(settings) as conn:
        rows = corrections.listing(conn, args.site, every=args.all)
    if args.json:
        print_json([{k: v for k, v in r.items() if k != "markdown"} | {"words": len(r["markdown"].split())}
                    for r in rows])
        return 0
    print_table(("id", "site", "status", "url", "text", "by", "added", "reason"),
                [(r["id"], r["site"], r["status"] + (f" ({r['expired_at']:%Y-%m-%d})" if r["expired_at"] else ""),
                  r["url"], r["content_hash"][:12], r["added_by"], f"{r['added_at']:%Y-%m-%d %H:%M}", r["reason"])
                 for r in rows], right=("id",))
    print(f"{len(rows)} {'corrections' if args.all else 'active corrections'}")
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import corrections

    with connect(settings) as conn:
        row = corrections.remove(conn, args.url, site=args.site, reason=args.reason or "")
    if args.json:
        print_json({k: v for k, v in row.items() if k != "markdown"})
    else:
        print(f"removed correction {row['id']} of {row['url']} ({row['site']}); the next run uses the page's own text")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import corrections

    with connect(settings) as conn:
        written = corrections.export_quarantine(conn, args.dir, args.site)
    if args.json:
        print_json(written)
        return 0
    for w in written:
        print(f"{w['path']}  {w['url']}  ({'; '.join(w['reasons'])})")
    print(f"{len(written)} quarantined documents written to {args.dir}. Fix one and record it with "
          "`sitekb corrections add URL --file FILE --reason ...`")
    return 0


def register(subparsers) -> None:
    cor = subparsers.add_parser(
        "corrections", help="a content owner's fixed text for a page, used while the page is unchanged",
        description="Replace a page's extracted text with a fixed markdown file (a transcript, a garbled table) "
                    "from the next run on. The correction holds while the page's extracted text stays the same, "
                    "and expires (with a warning in the run summary and the audit log) when the page changes.",
        epilog="examples:\n  sitekb corrections add https://example.com/webinar --file fixed.md "
               "--reason \"cleaned transcript\"\n  sitekb corrections list --site demo --json\n"
               "  sitekb corrections remove https://example.com/webinar",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = cor.add_subparsers(dest="action", metavar="add|list|remove", required=True)
    add = actions.add_parser("add", help="record the fixed text of a page",
                             description="Record FILE (markdown; a front matter from `sitekb quarantine export` is "
                                         "checked and stripped) as the text of URL. Example: sitekb corrections add "
                                         "https://example.com/webinar --file fixed.md --reason \"cleaned transcript\"")
    add.add_argument("url", help="the page's URL exactly as `sitekb quarantine` or `sitekb search` shows it")
    add.add_argument("--file", type=Path, required=True, help="the corrected markdown")
    add.add_argument("--reason", required=True, help="why the text is corrected")
    add.add_argument("--site", help="the site, when the URL belongs to several")
    add.add_argument("--by", help="who corrects (default: the current user)")
    add.add_argument("--json", action="store_true", help="print the recorded correction as JSON")
    add.set_defaults(func=cmd_add)

    lst = actions.add_parser("list", help="the active corrections (--all: every one ever recorded)",
                             description="Corrections by site and URL. Example: sitekb corrections list --all --json")
    lst.add_argument("--site", help="only this site")
    lst.add_argument("--all", action="store_true", help="also the removed and expired ones")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)

    rem = actions.add_parser("remove", help="stop using a page's correction",
                             description="End the active correction of URL: the next run uses the page's own text. "
                                         "Example: sitekb corrections remove https://example.com/webinar")
    rem.add_argument("url", help="the corrected page's URL")
    rem.add_argument("--site", help="the site, when the URL has corrections in several")
    rem.add_argument("--reason", help="why, for the audit log")
    rem.add_argument("--json", action="store_true", help="print the removed correction as JSON")
    rem.set_defaults(func=cmd_remove)


def register_export(quarantine_actions) -> None:
    """`sitekb quarantine export`, added to the quarantine command's subcommands."""
    quarantine_actions.metavar = "[approve|approvals|export]"
    exp = quarantine_actions.add_parser(
        "export", help="write each quarantined document as DIR/<slug>.md for an editor to fix",
        description="Write every quarantined document of the newest validated run (of each site, or --site) as "
                    "DIR/<slug>.md with a front matter (site, url, content_hash, reasons). Fix the text and record it "
                    "with `sitekb corrections add URL --file DIR/<slug>.md --reason ...`. Example: sitekb quarantine "
                    "export --site demo --dir fixes/")
    exp.add_argument("--site", help="only this site")
    exp.add_argument("--dir", type=Path, default=Path("quarantine"), help="folder to write to (default ./quarantine)")
    exp.add_argument("--json", action="store_true", help="list the files written as JSON")
    exp.set_defaults(func=cmd_export)
