"""Snapshot and query commands of the `sitekb` CLI.

    sitekb snapshots list [--site S] [--json]       snapshots with state, aliases, pin
    sitekb snapshots show ID                         one snapshot's full record (JSON)
    sitekb snapshots history [--site S] [--alias A] [--json]
                                                     every alias move: who, when, from, to, why
    sitekb snapshots diff A B [--json]               pages added/removed/changed, chunk churn
    sitekb snapshots pin ID / unpin ID               keep a snapshot through retention (or not)
    sitekb snapshots prune --site S [--keep N]       apply retention now
    sitekb snapshots compact --site S [--snapshot ID] [--force] [--json]
                                                     merge delta segments into one base
    sitekb audit [--site S] [--action A] [--json]   who did what, when and why
    sitekb publish ID [--alias production] [--reason TEXT]
    sitekb rollback [--site S] [--alias production] [--reason TEXT]
    sitekb search QUESTION [--site S] [--mode vector|keyword|hybrid] [--alias A | --snapshot ID]
    sitekb serve [--host 127.0.0.1] [--port 8000] [--api-key-file PATH ...] [--api-key KEY ...]

Settings read (resolved by the CLI): the database settings every command
reads; for serve also ``Settings.api_keys`` (plus ``--api-key-file`` and
``--api-key``) and ``Settings.api_database_url``. With an owner's URL (or the
embedded server) serve migrates as the owner first; with only
``SITEKB_API_DATABASE_URL`` it migrates nothing and refuses to start on a
schema that is missing or older than this sitekb's.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

from sitekb.commands import connect as _connect
from sitekb.commands import print_json as _print_json
from sitekb.commands import print_table
from sitekb.errors import ConfigError, DatabaseUnavailable
from sitekb.store.audit import ACTIONS as AUDIT_ACTIONS
from sitekb.passages import (DEFAULT_ALIAS, DEFAULT_MODE, DEFAULT_PAGE_PASSAGES, DEFAULT_PER_PAGE,
                             DEFAULT_VECTOR_WEIGHT, MODES)
from sitekb.settings import Settings

log = logging.getLogger(__name__)


# -- snapshots --------------------------------------------------------------

def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import snapshots

    with _connect(settings) as conn:
        rows = snapshots.list_snapshots(conn, args.site)
    if args.json:
        _print_json(rows)
        return 0
    print_table(("id", "site", "state", "chunks", "model", "created", "aliases"),
                [(r["snapshot_id"], r["site"], r["state"], r["counts"].get("chunks", 0), r["embedding_model"],
                  f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
                  ", ".join(r["aliases"]) + ("  [pinned]" if r["pinned"] else "")) for r in rows],
                right=("id", "chunks"))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import segments, snapshots

    with _connect(settings) as conn:
        record = snapshots.get(conn, args.snapshot_id).as_dict()
        # Which segments it holds: the base first, then the deltas, each with its tombstones.
        record["segments"] = [s.as_dict() for s in segments.manifest(conn, args.snapshot_id)]
        _print_json(record)
    return 0


def cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import segments, snapshots

    with _connect(settings) as conn:
        if args.snapshot is not None:
            targets = [args.snapshot]
        else:
            targets = snapshots.compaction_targets(conn, args.site)
        results = [segments.compact(conn, sid, force=args.force) for sid in targets]
    if args.json:
        _print_json(results)
        return 0
    if not results:
        print(f"site {args.site} has no built snapshot to compact")
    for r in results:
        if r["compacted"]:
            print(f"snapshot {r['snapshot_id']}: segments {', '.join(map(str, r['segments_before']))} merged into "
                  f"segment {r['segment_id']} ({r['rows']} rows) in {r['build_seconds']:.1f}s, swapped in "
                  f"{r['swap_seconds']:.2f}s; dropped segments no snapshot lists: "
                  f"{', '.join(map(str, r['dropped_segments'])) or 'none'}")
        else:
            print(f"snapshot {r['snapshot_id']}: not due (segments {', '.join(map(str, r['segments_before']))}); "
                  "--force compacts anyway")
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import snapshots

    with _connect(settings) as conn:
        rows = snapshots.history(conn, args.site, args.alias, limit=args.limit)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no alias has moved yet")
    for r in rows:
        origin = r["from_snapshot"] if r["from_snapshot"] is not None else "(none)"
        print(f"{r['moved_at']:%Y-%m-%d %H:%M:%S}  {r['site']}/{r['alias']}: {origin} -> {r['to_snapshot']}  "
              f"by {r['actor']}" + (f"  ({r['reason']})" if r["reason"] else ""))
    return 0


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import diffs, report
    from sitekb.store import snapshots

    if args.context < 0 or args.max_lines < 0:
        raise ConfigError("--context and --max-lines take a count of lines, 0 or more (0 lines: no limit)")
    with _connect(settings) as conn:
        old, new = snapshots.get(conn, args.old), snapshots.get(conn, args.new)
        if old.site != new.site:
            raise ConfigError(f"snapshot {old.snapshot_id} is of site {old.site!r} and {new.snapshot_id} of "
                              f"{new.site!r}; compare two snapshots of one site")
        # --json gives every page's text diff; the terminal shows the first --limit of each kind.
        result = diffs.readable(conn, old, new, pages=10**9 if args.json else args.limit,
                                context=args.context, max_lines=args.max_lines)
    if args.json:
        _print_json(result.as_dict())
    else:
        print(report.format_diff(result, limit=args.limit, text=not args.no_text))
    return 0


def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import snapshots

    pinned = args.action == "pin"
    with _connect(settings) as conn:
        snap = snapshots.set_pinned(conn, args.snapshot_id, pinned, reason=args.reason)
    if args.json:
        _print_json({"snapshot_id": snap.snapshot_id, "site": snap.site, "pinned": snap.pinned})
        return 0
    print(f"snapshot {snap.snapshot_id} of {snap.site} is {'pinned: retention keeps it' if pinned else 'unpinned'}")
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import snapshots
    from sitekb.sites import load_site

    keep = args.keep if args.keep is not None else load_site(args.site).keep_snapshots
    with _connect(settings) as conn:
        dropped = snapshots.apply_retention(conn, args.site, keep, actor=snapshots.current_actor())
    if args.json:
        _print_json({"site": args.site, "keep": keep, "dropped": dropped})
        return 0
    print(f"kept the newest {keep} snapshots of {args.site} plus aliased and pinned ones; "
          f"dropped {', '.join(map(str, dropped)) if dropped else 'none'}")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import audit

    with _connect(settings) as conn:
        rows = audit.events(conn, site=args.site, action=args.action, limit=args.limit)
    if args.json:
        _print_json([{**r, "at": r["at"].isoformat()} for r in rows])
        return 0
    if not rows:
        print("nothing recorded" + (f" for {args.site}" if args.site else ""))
    for r in rows:
        print(f"{r['at']:%Y-%m-%d %H:%M:%S}  {r['site']:<14} {r['action']:<13} {r['target']}  by {r['actor']}"
              + (f"  ({r['reason']})" if r["reason"] else ""))
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import snapshots

    with _connect(settings) as conn:
        previous = snapshots.publish(conn, args.snapshot_id, args.alias, reason=args.reason or "manual publish")
    if args.json:
        _print_json({"alias": args.alias, "snapshot_id": args.snapshot_id, "previous": previous})
        return 0
    print(f"alias {args.alias} -> snapshot {args.snapshot_id} (was {previous})")
    return 0


def snapshot_of(conn, site: str | None, snapshot_id: int | None, alias: str | None):
    """The snapshot a reading command is about: ``--snapshot N`` (checked against ``--site``), else the
    alias (default production) of the site named or of the only site with a published snapshot."""
    from sitekb.passages import DEFAULT_ALIAS
    from sitekb.store import snapshots

    if snapshot_id is not None and alias is not None:
        raise ConfigError("pass --snapshot N or --alias A, not both")
    if snapshot_id is not None:
        snap = snapshots.get(conn, snapshot_id)
        if site and snap.site != site:
            from sitekb.errors import NotFound

            raise NotFound(f"snapshot {snap.snapshot_id} is of site {snap.site!r}, not {site!r}")
        return snap
    return snapshots.resolve(conn, _which_site(conn, site), alias or DEFAULT_ALIAS)


def _which_site(conn, given: str | None) -> str:
    """The site a command is about: the one named, or the only site with a published snapshot.

    Never a default name: on an install with several sites a bare `rollback`
    would move the wrong alias.
    """
    from sitekb.errors import NotFound
    from sitekb.store import knowledge

    if given:
        return given
    published = sorted(row["site"] for row in knowledge.sites(conn) if row["aliases"])
    if len(published) == 1:
        return published[0]
    if not published:
        raise NotFound("no site has a published snapshot yet; `sitekb run SITE` builds one")
    raise ConfigError(f"{len(published)} sites have published snapshots ({', '.join(published)}): "
                      "say which with --site")


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.store import snapshots

    with _connect(settings) as conn:
        site = _which_site(conn, args.site)
        old, new = snapshots.rollback(conn, site, args.alias, reason=args.reason or "rollback")
    if args.json:
        _print_json({"site": site, "alias": args.alias, "from_snapshot": old, "to_snapshot": new})
        return 0
    print(f"rolled back {site}/{args.alias}: snapshot {old} -> {new}")
    return 0


# -- search -----------------------------------------------------------------

def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import query, report

    filters = query.Filters(url_prefix=args.url_prefix, tags=tuple(args.tag) if args.tag else None,
                            language=args.language, published_after=args.published_after,
                            published_before=args.published_before)
    with _connect(settings) as conn:
        if args.snapshot is not None and not args.site:
            from sitekb.store import snapshots

            site = snapshots.get(conn, args.snapshot).site
        else:
            site = _which_site(conn, args.site)
        ranking = query.Ranking(per_page=args.per_page or None, vector_weight=args.vector_weight,
                                query_language=args.query_language)
        # An operator may look into a pinned snapshot that is built but not published (a rejected one, say).
        common = dict(site=site, k=args.k, mode=args.mode, alias=args.alias, snapshot_id=args.snapshot,
                      filters=filters, ranking=ranking, unpublished=args.snapshot is not None)
        if args.pages:
            pages = query.search_pages(conn, settings, args.question, passages=args.pages, **common)
        else:
            result = query.search(conn, settings, args.question, **common)
    if args.pages:
        if args.json:
            _print_json(pages.as_dict())
        else:
            print(f"snapshot {pages.snapshot_id} of {pages.site} ({pages.embedding_model}, {args.mode} search)")
            print(report.format_pages(pages.pages))
        return 0
    if args.json:
        _print_json({"query": args.question, "site": result.site, "snapshot_id": result.snapshot_id,
                     "model": result.embedding_model, "mode": args.mode,
                     "results": [p.as_dict() for p in result]})
    else:
        print(f"snapshot {result.snapshot_id} of {result.site} ({result.embedding_model}, {args.mode} search)")
        print(report.format_passages(result.passages, args.question))
    return 0


# -- serve ------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("`sitekb serve` needs the serve extra: pip install 'sitekb[serve]'") from None
    from sitekb import api

    keys = api_keys(settings, args.api_key_file or (), args.api_key or ())
    app = api.create_app(settings, database_url=serving_url(settings), api_keys=keys)
    print(f"sitekb API and search page on http://{args.host}:{args.port}/ "
          f"(OpenAPI at /openapi.json{'; API keys required' if app.state.api_keys else ''})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.server_log_level)
    return 0


def serving_url(settings: Settings) -> str:
    """The URL ``serve`` reads with, its schema checked; migrated first as the owner when there is one.

    Owner: ``SITEKB_DATABASE_URL``, else the embedded server, unless only
    ``SITEKB_API_DATABASE_URL`` is set: a reader-only deployment (docker-compose's
    sitekb-api) holds no owner credentials, and a separate job migrates.
    """
    from sitekb import store

    reader_only = settings.api_database_url is not None and settings.database_url is None
    if reader_only:
        url = settings.api_database_url
    else:
        owner_url = store.database_url(settings)
        with store.connection(owner_url) as conn:
            store.migrate(conn)
        url = settings.api_database_url or owner_url
    check_schema(url, migrated_here=not reader_only)
    return url


def check_schema(url: str, *, migrated_here: bool = False) -> int:
    """The schema version the API at ``url`` reads; DatabaseUnavailable if it is missing or too old."""
    import psycopg

    from sitekb import query, store
    from sitekb.store.schema import latest_version

    expected = latest_version()
    todo = ("check that SITEKB_API_DATABASE_URL names the database SITEKB_DATABASE_URL migrates" if migrated_here
            else "migrate it as the owner first (`sitekb db migrate` with SITEKB_DATABASE_URL; in docker-compose "
                 "the sitekb-migrate service), then start `sitekb serve` again")
    with store.connection(url) as conn:
        try:
            version = query.schema_version(conn)
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName,
                psycopg.errors.InsufficientPrivilege) as exc:
            raise DatabaseUnavailable(
                f"the database at {store.redact(url)} has no sitekb schema this role may read "
                f"({exc.diag.message_primary}): {todo}") from None
    if version is None or version < expected:
        raise DatabaseUnavailable(f"the database at {store.redact(url)} has sitekb schema version {version}, this "
                                  f"sitekb needs {expected}: {todo}")
    return version


def api_keys(settings: Settings, files=(), given=()) -> list[str]:
    """The keys ``serve`` requires: SITEKB_API_KEYS, then each key file, then ``--api-key`` (with a warning)."""
    keys = list(settings.api_keys)
    for path in files:
        keys += read_key_file(Path(path))
    if given:
        log.warning("--api-key is visible to every user of this machine (ps, /proc/PID/cmdline): "
                    "pass keys in SITEKB_API_KEYS or a file given with --api-key-file instead")
        keys += list(given)
    return keys


def read_key_file(path: Path) -> list[str]:
    """The keys in ``path``: one a line; blank lines and lines starting with # are skipped.

    Warns when group or others may read the file; a file that cannot be read or
    holds no key is a ConfigError (serving without keys would open the API).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the API key file {path} is not UTF-8 text: one key a line") from None
    if mode & 0o044:
        log.warning("the API key file %s may be read by other users (mode %03o): chmod 600 %s",
                    path, mode & 0o777, path)
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ConfigError(f"the API key file {path} holds no key: one key a line (lines starting with # are "
                          "comments)")
    return keys


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2024-05-31") from None


def register(sub) -> None:
    snaps = sub.add_parser("snapshots", help="list snapshots, show one, diff two, pin, prune, or the alias history")
    snaps_sub = snaps.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = snaps_sub.add_parser("list", help="snapshots with their state, aliases and pin")
    lst.add_argument("--site", help="only this site")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)
    show = snaps_sub.add_parser("show", help="one snapshot's full record as JSON")
    show.add_argument("snapshot_id", type=int, help="snapshot id")
    show.add_argument("--json", action="store_true", help="the record as JSON (what it prints anyway)")
    show.set_defaults(func=cmd_show)
    hist = snaps_sub.add_parser("history", help="every alias move: who, when, from, to, why")
    hist.add_argument("--site", help="only this site")
    hist.add_argument("--alias", help="only this alias")
    hist.add_argument("--limit", type=int, default=50, help="newest N moves (default 50)")
    hist.add_argument("--json", action="store_true", help="machine-readable output")
    hist.set_defaults(func=cmd_history)
    diff = snaps_sub.add_parser(
        "diff", help="what changed from A to B: per changed page its sections and a text diff, per removed page why",
        description="Pages added, removed and changed from snapshot A to snapshot B, and chunk churn. Each changed "
                    "page shows the sections (heading paths) whose text changed and a line diff of its indexed "
                    "text; each removed page says why it went (page not found, an opt-out such as "
                    "#do_NOT_train_on_this, quarantined, excluded by a rule, no longer linked), from B's run.",
        epilog="examples:\n  sitekb snapshots diff 11 12\n  sitekb snapshots diff 11 12 --context 3 --max-lines 0\n"
               "  sitekb snapshots diff 11 12 --no-text --limit 200\n  sitekb snapshots diff 11 12 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    diff.add_argument("old", type=int, metavar="A", help="the older snapshot id")
    diff.add_argument("new", type=int, metavar="B", help="the newer snapshot id")
    diff.add_argument("--limit", type=int, default=50, help="pages listed per kind (default 50; --json lists all)")
    diff.add_argument("--context", type=int, default=1, help="unchanged lines shown around each change (default 1)")
    diff.add_argument("--max-lines", type=int, default=40,
                      help="diff lines shown per page (default 40; 0: all)")
    diff.add_argument("--no-text", action="store_true", help="list the pages only, without their text diffs")
    diff.add_argument("--json", action="store_true",
                      help="every page with its chunk counts, headings, text diff and removal reason, as JSON")
    diff.set_defaults(func=cmd_diff)
    for action, text in (("pin", "keep a snapshot through retention"), ("unpin", "let retention drop it again")):
        pin = snaps_sub.add_parser(action, help=text)
        pin.add_argument("snapshot_id", type=int, help="snapshot id")
        pin.add_argument("--reason", default="", help="why, for the audit log")
        pin.add_argument("--json", action="store_true", help="print the snapshot's id, site and pin as JSON")
        pin.set_defaults(func=cmd_pin)
    compact = snaps_sub.add_parser(
        "compact", help="merge a snapshot's delta segments into one new base (searches go on meanwhile)",
        description="A refresh adds a delta segment and tombstones to the snapshot it builds on. Compaction "
                    "merges the segments of a site's live snapshot (and its newest, which the next refresh builds "
                    "on) into one new base segment with exactly the same rows, while searches keep answering; "
                    "segments that no kept snapshot lists any more are dropped. It is due when the deltas and "
                    "tombstones pass 20%% of the base or 8 deltas; the sitekb_maintenance DAG runs it daily.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    compact.add_argument("--site", required=True, help="site whose snapshots to compact")
    compact.add_argument("--snapshot", type=int, help="only this snapshot (default: the live and the newest)")
    compact.add_argument("--force", action="store_true", help="compact even when it is not due")
    compact.add_argument("--json", action="store_true", help="print what was merged as JSON")
    compact.set_defaults(func=cmd_compact)
    prune = snaps_sub.add_parser("prune", help="apply retention now: drop old unaliased, unpinned snapshots")
    prune.add_argument("--site", required=True, help="site whose snapshots to prune")
    prune.add_argument("--keep", type=int, help="newest N to keep (default: the site config's keep_snapshots)")
    prune.add_argument("--json", action="store_true", help="print the dropped snapshot ids as JSON")
    prune.set_defaults(func=cmd_prune)

    aud = sub.add_parser("audit", help="who published, rolled back, approved, rejected, pinned, pruned and ran what",
                         description="The audit log, newest first: every alias move and decision, every approval "
                                     "of a quarantined page, every run start and every pin, unpin and prune, with "
                                     "who did it and why. Example: sitekb audit --site demo --action 'rolled back'")
    aud.add_argument("--site", help="only this site")
    aud.add_argument("--action", choices=AUDIT_ACTIONS, help="only this kind of act")
    aud.add_argument("--limit", type=int, default=100, help="newest N (default 100)")
    aud.add_argument("--json", action="store_true", help="machine-readable output")
    aud.set_defaults(func=cmd_audit)

    pub = sub.add_parser("publish", help="point an alias at a snapshot (atomic, recorded in the history)")
    pub.add_argument("snapshot_id", type=int, help="snapshot id (validated or previously published)")
    pub.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to move (default: {DEFAULT_ALIAS})")
    pub.add_argument("--reason", default="", help="why, for the history")
    pub.add_argument("--json", action="store_true", help="print the alias, the snapshot and the previous one as JSON")
    pub.set_defaults(func=cmd_publish)

    rb = sub.add_parser("rollback", help="move an alias back to its previous snapshot (atomic)")
    rb.add_argument("--site", help="the site (may be left out when only one site has a published snapshot)")
    rb.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to move back (default: {DEFAULT_ALIAS})")
    rb.add_argument("--reason", default="", help="why, for the history")
    rb.add_argument("--json", action="store_true", help="print the site, alias and the move as JSON")
    rb.set_defaults(func=cmd_rollback)

    search = sub.add_parser("search", help="top passages with their source URLs from a published snapshot")
    search.add_argument("question", help="the question, in plain words")
    search.add_argument("--site", help="the site (may be left out when only one site has a published snapshot)")
    search.add_argument("--k", type=int, default=5, help="how many passages (1-100), or pages with --pages (1-20)")
    search.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                        help=f"vector, keyword (BM25 full-text) or hybrid (pages ranked by both scores, standardised "
                             f"and weighed, see --vector-weight); default {DEFAULT_MODE}")
    search.add_argument("--per-page", type=int, default=DEFAULT_PER_PAGE, metavar="N",
                        help=f"at most N passages of one page (default {DEFAULT_PER_PAGE}; 0: no limit)")
    search.add_argument("--pages", type=int, nargs="?", const=DEFAULT_PAGE_PASSAGES, metavar="PASSAGES",
                        help=f"list the top k pages instead, each with its best PASSAGES passages "
                             f"(1-5, default {DEFAULT_PAGE_PASSAGES})")
    search.add_argument("--vector-weight", type=float, metavar="W",
                        help=f"hybrid: the vector leg's weight from 0 to 1 (default {DEFAULT_VECTOR_WEIGHT}; "
                             "the keywords have the rest)")
    search.add_argument("--query-language", metavar="LANG",
                        help="the question's language, e.g. es (default: --language, else every language of "
                             "the snapshot)")
    search.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to read (default: {DEFAULT_ALIAS})")
    search.add_argument("--snapshot", type=int,
                        help="pin a snapshot id instead of an alias (any built one: an operator may look into "
                             "a snapshot that is not published)")
    search.add_argument("--url-prefix", help="only pages whose URL starts with this")
    search.add_argument("--tag", action="append", help="only pages with this tag (repeat: any of them)")
    search.add_argument("--language", help="only pages in this language (en also matches en-GB)")
    search.add_argument("--published-after", type=_date, help="only pages published on or after this date")
    search.add_argument("--published-before", type=_date, help="only pages published on or before this date")
    search.add_argument("--json", action="store_true", help="machine-readable results")
    search.set_defaults(func=cmd_search)

    serve = sub.add_parser("serve", help="the HTTP query API and search page (FastAPI)",
                           description="Serve POST /v1/search, GET /v1/snapshots, /healthz, /readyz, the OpenAPI "
                                       "spec at /openapi.json and a search page at /. Binds to 127.0.0.1 unless "
                                       "told otherwise.")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key-file", action="append", type=Path, metavar="PATH",
                       help="require the API keys in this file: one a line, # starts a comment (repeatable; adds "
                            "to SITEKB_API_KEYS); keep it chmod 600")
    serve.add_argument("--api-key", action="append",
                       help="require this API key (repeatable; adds to SITEKB_API_KEYS). Other users see it in "
                            "`ps`: prefer SITEKB_API_KEYS or --api-key-file. No key at all: open access")
    serve.add_argument("--log-level", dest="server_log_level", default="info",
                       choices=("critical", "error", "warning", "info", "debug"),
                       help="uvicorn log level")
    serve.set_defaults(func=cmd_serve)
