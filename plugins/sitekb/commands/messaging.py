"""`sitekb messaging`: which pages and chunks of a snapshot still use a retired term or claim.

    sitekb messaging [--site S] [--alias A | --snapshot N] [--json]

The findings are those the evaluate stage kept with the snapshot for the rules
of the site config's ``messaging`` section (:mod:`sitekb.messaging`): per rule,
its policy and replacement, the pages still using it (URL, title, count, an
excerpt around the first hit) with their chunks, and the pages held back for
it. Without ``--snapshot`` it reads the live snapshot (``--alias``, default
production).
"""

from __future__ import annotations

import argparse

from sitekb.commands import connect as _connect
from sitekb.commands import print_json as _print_json
from sitekb.passages import DEFAULT_ALIAS
from sitekb.settings import Settings

EXAMPLES = """examples:
  sitekb messaging --site acme                  the live snapshot (alias production)
  sitekb messaging --site acme --alias staging  the snapshot another alias points to
  sitekb messaging --site acme --snapshot 42    a snapshot the gate rejected
  sitekb messaging --site acme --json           rules, pages, excerpts and chunk ids as JSON"""

DESCRIPTION = """\
List, per messaging rule of the site config (retired terms and claims), the pages
of a snapshot that still use it with a count and an excerpt, its chunks, and the
pages held back for it. Reads the live snapshot unless --snapshot names one.

A pivot: add the retired term to the site config, e.g.

  messaging:
    - term: Acme Cloud
      replacement: Acme Platform
      policy: report     # or quarantine (hold the pages back) or block (do not publish)

then `sitekb run acme`, and this command lists what is left to change."""


def cmd_messaging(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.commands.snapshots import snapshot_of
    from sitekb.store import knowledge
    from sitekb.store import messaging as findings

    with _connect(settings) as conn:
        snap = snapshot_of(conn, args.site, args.snapshot, args.alias)
        rules = findings.for_snapshot(conn, snap.snapshot_id)
        aliases = [row["alias"] for row in knowledge.aliases(conn, snap.site) if row["snapshot_id"] == snap.snapshot_id]
    if args.json:
        _print_json({"site": snap.site, "snapshot_id": snap.snapshot_id, "state": snap.state, "aliases": aliases,
                     "rules": rules})
        return 0
    print(f"{snap.site}: snapshot {snap.snapshot_id} ({snap.state}"
          + (f", alias {', '.join(aliases)}" if aliases else "") + ")")
    if not rules:
        print("no messaging rules were checked: the site config had none when this snapshot was evaluated. "
              "Add a `messaging` section (see `sitekb messaging --help`) and run the site again.")
        return 0
    for rule in rules:
        advice = f'use "{rule["replacement"]}"' if rule["replacement"] else ""
        if rule["note"]:
            advice = f"{advice}; {rule['note']}" if advice else rule["note"]
        state = f"{len(rule['pages'])} page(s), {rule['chunks']} chunk(s)" if rule["pages"] else "no page uses it"
        print(f"\n{rule['rule']}  [{rule['policy']}]  {state}" + (f"  ({advice})" if advice else ""))
        for page in rule["pages"]:
            print(f"  {page['url']}  {page['title'] or '(untitled)'}  {page['count']}x, "
                  f"{len(page['chunk_ids'])} chunk(s)")
            print(f"      {page['excerpt']}")
        for page in rule["held_back"]:
            print(f"  held back (quarantined): {page['url']}  {page['title'] or '(untitled)'}")
    left = sum(1 for rule in rules if rule["pages"])
    print(f"\n{left} of {len(rules)} rules still used by pages of this snapshot; "
          "`sitekb quarantine` shows the pages held back, `--json` every chunk id.")
    return 0


def register(subparsers) -> None:
    msg = subparsers.add_parser(
        "messaging", help="pages and chunks of a snapshot that still use a retired term or claim",
        description=DESCRIPTION,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msg.add_argument("--site", help="the site (may be left out when only one site has a published snapshot)")
    which = msg.add_mutually_exclusive_group()
    which.add_argument("--alias", help=f"read the snapshot this alias points to (default: {DEFAULT_ALIAS})")
    which.add_argument("--snapshot", type=int, metavar="N", help="read snapshot N (any state, a rejected one too)")
    msg.add_argument("--json", action="store_true", help="machine-readable output, with every chunk id")
    msg.set_defaults(func=cmd_messaging)
