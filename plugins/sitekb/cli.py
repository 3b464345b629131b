"""The `sitekb` command line.

Every command prints what a person needs and, with ``--json``, what a program
needs. A terminal error prints one message naming the problem and what to do,
and exits non-zero (the exit code tells the kind: 2 config, 3 database,
4 crawl, 5 quality gate, 6 budget, 7 not found).

Precedence of settings: command-line options > environment (``SITEKB_*``,
``OPENAI_*``) > the site's YAML file > built-in defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from sitekb import __version__
from sitekb.commands import connect
from sitekb.commands import print_json as _print_json
from sitekb.errors import ConfigError, SitekbError
from sitekb.settings import Settings

DEFAULT_QUESTION = "How should we score leads that request a demo?"

# Modules that add their own subcommands: each has `register(subparsers)` and
# sets `func(args, settings) -> int` on the parsers it adds. Kept apart so a
# command family lives next to the code it drives.
EXTRA_COMMANDS: tuple[str, ...] = ("sitekb.commands.quality", "sitekb.commands.snapshots", "sitekb.commands.crawl",
                                    "sitekb.commands.embeddings")


@contextmanager
def _demo_origin(site: str | None, start_url: str | None) -> Iterator[str | None]:
    """Serve the bundled demo site for the length of a run of `demo`."""
    if site != "demo" or start_url:
        yield start_url
        return
    from sitekb.demo.server import serve_demo_site

    server = serve_demo_site()
    try:
        print(f"serving the demo site at {server.base_url}", file=sys.stderr)
        yield server.base_url
    finally:
        server.stop()


# -- run --------------------------------------------------------------------

def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import pipeline, report

    if not args.site and not args.start_url:
        raise ConfigError("name a site (e.g. `sitekb run demo`) or pass --start-url URL")
    with _demo_origin(args.site, args.start_url) as origin:
        if args.site is None:
            from sitekb.sites import adhoc_site

            config = adhoc_site(args.start_url, allow_private=args.allow_private)
        else:
            config = pipeline.resolve_site(args.site, settings, start_url=origin)
        if args.dry_run:
            return _dry_run(config, settings, args)
        started = time.time()
        if args.engine == "airflow":
            from sitekb.airflow_runner import run_dag

            run_id = run_dag(config, args.site or config.name, settings, origin=origin, alias=args.alias,
                             full_recrawl=args.full)
        else:
            run_id = pipeline.run_refresh(config, settings=settings, alias=args.alias, full_recrawl=args.full,
                                          log=lambda m: print(m, file=sys.stderr))
        with connect(settings) as conn:
            summary = report.run_summary(conn, run_id)
            summary["wall_seconds"] = round(time.time() - started, 2)
            passages = []
            if summary["status"] == "succeeded" and args.question != "":
                from sitekb.search import search

                _, passages = search(conn, config.name, args.question or DEFAULT_QUESTION, k=3,
                                     alias=args.alias, mode=args.mode)
        if args.json:
            _print_json({**summary, "sample_search": [p.as_dict() for p in passages]})
        else:
            print(report.format_summary(summary))
            if passages:
                print()
                print(report.format_passages(passages, args.question or DEFAULT_QUESTION))
    return 0 if summary["status"] == "succeeded" else 1


def _dry_run(config, settings: Settings, args) -> int:
    """Crawl, extract and chunk into a throw-away run and report the embedding bill."""
    from sitekb import db, pipeline
    from sitekb.embedding import estimate_cost

    run_id = pipeline.new_run_id("dryrun")
    url = db.database_url(settings)
    with db.connection(url) as conn:
        db.migrate(conn)
        run = pipeline.start_run(conn, config, run_id, {"dry_run": True})
        try:
            crawl = pipeline.crawl_stage(conn, run, url)
            pipeline.extract_stage(conn, run)
            validate = pipeline.validate_stage(conn, run)
            chunk = pipeline.chunk_stage(conn, run, settings)
            estimate = estimate_cost(conn, run_id, pipeline.embedding_plan(run, settings))
        finally:
            with conn.transaction():
                conn.execute("DELETE FROM sitekb.chunks WHERE run_id = %s", (run_id,))
                conn.execute("DELETE FROM sitekb.documents WHERE run_id = %s", (run_id,))
                conn.execute(
                    "UPDATE sitekb.runs SET status = 'succeeded', finished_at = now() WHERE run_id = %s", (run_id,)
                )
    result = {"site": config.name, "pages": crawl["pages"], "documents": validate["accepted"],
              "quarantined": validate["quarantined"], "chunks": chunk["chunks"], "tokens": chunk["tokens"], **estimate}
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:16} {value}")
    return 0


# -- db ---------------------------------------------------------------------

def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import db, embedded_pg

    if settings.database_url and args.action in ("start", "stop"):
        print(f"SITEKB_DATABASE_URL is set ({db.redact(settings.database_url)}); the embedded database is not used.")
        return 0
    if args.action == "start":
        url = embedded_pg.start(settings.home)
        with db.connection(url) as conn:
            applied = db.migrate(conn)
        print(f"embedded Postgres running: {url}" + (f" (applied migrations {applied})" if applied else ""))
    elif args.action == "stop":
        print("stopped" if embedded_pg.stop(settings.home) else "not running")
    elif args.action == "status":
        if settings.database_url:
            with db.connection(settings.database_url) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            info = {"external": True, "url": db.redact(settings.database_url), "server_version": version}
        else:
            info = {"external": False, **embedded_pg.status(settings.home)}
        _print_json(info) if args.json else print("\n".join(f"{k:10} {v}" for k, v in info.items()))
        return 0 if info.get("running", True) else 1
    elif args.action == "url":
        print(db.database_url(settings, start_embedded=False))
    elif args.action == "migrate":
        with connect(settings):
            pass
        print("schema up to date")
    return 0


# -- ledgers ----------------------------------------------------------------

def cmd_exclusions(args: argparse.Namespace, settings: Settings) -> int:
    from psycopg.rows import dict_row

    with connect(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        # Without --run, each (URL, rule) once, as the newest run that applied it recorded it.
        rows = cur.execute(
            """SELECT DISTINCT ON (site, url, rule) site, url, rule, detail, run_id, excluded_at
               FROM sitekb.exclusions
               WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(run)s::text IS NULL OR run_id = %(run)s)
                 AND (%(rule)s::text IS NULL OR rule = %(rule)s)
               ORDER BY site, url, rule, excluded_at DESC""",
            {"site": args.site, "run": args.run, "rule": args.rule},
        ).fetchall()
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['site']:10} {r['rule']:16} {r['url']}  ({r['detail']})")
        print(f"{len(rows)} exclusions")
    return 0


def cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    from sitekb import db
    from sitekb.airflow_runner import _airflow, airflow_env, ensure_metadata_db

    env = airflow_env(settings, db.database_url(settings))
    ensure_metadata_db(env)
    return subprocess.call([_airflow(), *args.args], env=env)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.demo.server import serve_demo_site

    server = serve_demo_site(port=args.port)
    print(f"demo site at {server.base_url} (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


# -- parser -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitekb", description="Turn a website into versioned, queryable knowledge snapshots for chatbots.",
    )
    parser.add_argument("--version", action="version", version=f"sitekb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one refresh of a site: crawl, validate, embed, build, publish",
                         description="Run one refresh of a site and print the summary and a sample search.")
    run.add_argument("site", nargs="?", help="site config: a name under dags/sites/ (e.g. demo) or a YAML path")
    run.add_argument("--start-url", help="crawl an ad-hoc site from this URL (or serve SITE from this origin)")
    run.add_argument("--allow-private", action="store_true",
                     help="with --start-url: allow a loopback/private address (refused by default)")
    run.add_argument("--alias", default="production", help="alias to publish to (default: production)")
    run.add_argument("--full", action="store_true", help="full recrawl: ignore ETag/Last-Modified")
    run.add_argument("--engine", choices=("local", "airflow"), default="local",
                     help="local: stages in this process; airflow: the sitekb_refresh DAG via `airflow dags test`")
    run.add_argument("--dry-run", action="store_true", help="crawl and chunk, then report tokens and cost; embed nothing")
    run.add_argument("--question", default=None, help="sample question to search after publishing ('' for none)")
    run.add_argument("--mode", choices=("vector", "keyword", "hybrid"), default="vector",
                     help="search mode of the sample search")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_run)

    dbp = sub.add_parser("db", help="manage the embedded database (start|stop|status|url|migrate)")
    dbp.add_argument("action", choices=("start", "stop", "status", "url", "migrate"))
    dbp.add_argument("--json", action="store_true", help="machine-readable status")
    dbp.set_defaults(func=cmd_db)

    exc = sub.add_parser("exclusions", help="the ledger of URLs left out, with the rule that excluded each")
    exc.add_argument("--site", help="only this site")
    exc.add_argument("--run", metavar="RUN_ID", help="only what this run excluded")
    exc.add_argument("--rule", help="only this rule (label, robots-txt, robots-meta, tdm-reservation, off-domain, ...)")
    exc.add_argument("--json", action="store_true", help="machine-readable output")
    exc.set_defaults(func=cmd_exclusions)

    demo = sub.add_parser("demo", help="serve the bundled demo site until Ctrl-C")
    demo.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (a free one if busy)")
    demo.set_defaults(func=cmd_demo)

    af = sub.add_parser("airflow", help="run the `airflow` CLI with sitekb's environment (e.g. `standalone`)",
                        description="Runs `airflow ARGS...` with AIRFLOW_HOME under SITEKB_HOME, the sitekb DAGs "
                                    "and the database URL set, e.g. `sitekb airflow standalone`.")
    af.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to airflow")
    af.set_defaults(func=cmd_airflow)

    for module in EXTRA_COMMANDS:
        import importlib

        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.func(args, settings)
    except SitekbError as exc:
        print(f"sitekb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sitekb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
