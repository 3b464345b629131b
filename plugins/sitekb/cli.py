"""The `sitekb` command line.

Every command prints what a person needs and, with ``--json``, what a program
needs. An error prints one line, ``sitekb: error: ...``, naming the problem
(and the run and stage it stopped, for a run) and what to do, never a
traceback or a secret, and exits non-zero; the exit code tells the kind:
1 other, 2 config, 3 database (also a connection lost in the middle of a
command), 4 crawl, 5 quality gate, 6 budget, 7 not found, 8 query embedding,
9 run in progress, 10 the run's embedding server failed (see :mod:`sitekb.errors`).

This is an entry point: settings are resolved here once (command-line options
> environment > the site's YAML file > built-in defaults) and passed to every
command. Command families live in :mod:`sitekb.commands`, one module each; a
family's ``register(subparsers)`` sets ``func(args, settings) -> int`` on the
parsers it adds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sitekb import __version__
from sitekb.commands import connect
from sitekb.commands import print_json as _print_json
from sitekb.errors import ConfigError, SitekbError, TransientError, database_lost
from sitekb.redaction import redact
from sitekb.passages import DEFAULT_ALIAS, DEFAULT_MODE, MODES
from sitekb.settings import PROCESS_ENVIRONMENT, Settings

DEFAULT_QUESTION = "How should we score leads that request a demo?"



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
    from sitekb import engine, report
    from sitekb.sites import adhoc_site, resolve_site

    if not args.site and not args.start_url:
        raise ConfigError("name a site (e.g. `sitekb run demo`) or pass --start-url URL")
    if (args.run_id or args.force) and not args.from_stage:
        raise ConfigError("--run and --force go with --from STAGE (they say which run it takes up, and how)")
    if args.from_stage and (args.dry_run or args.engine == "airflow"):
        raise ConfigError("--from STAGE reruns stages in this process: leave out --dry-run and --engine airflow")
    with _demo_origin(args.site, args.start_url) as origin:
        if args.site is None:
            config = adhoc_site(args.start_url, allow_private=args.allow_private)
        else:
            config = resolve_site(args.site, settings, start_url=origin)
        if args.dry_run:
            result = engine.dry_run(settings, config)
            if args.json:
                _print_json(result)
            else:
                for key, value in result.items():
                    print(f"{key:16} {value}")
            return 0
        started = time.time()
        if args.engine == "airflow":
            from sitekb.orchestration.runner import run_dag

            # On a terminal a live view of the DAG run; in a log (a file, a pipe), a line per phase and task.
            run_id = run_dag(config, args.site or config.name, settings, origin=origin, alias=args.alias,
                             full_recrawl=args.full, live=sys.stderr.isatty())
        else:
            with _progress_bar() as progress:
                if args.from_stage:
                    run_id = engine.rerun(settings, config, args.from_stage, run_id=args.run_id,
                                          force=args.force, progress=progress)
                else:
                    run_id = engine.refresh(settings, config, alias=args.alias, full_recrawl=args.full,
                                            take_over=args.take_over, progress=progress)
        with connect(settings) as conn:
            summary = report.run_summary(conn, run_id)
            summary["wall_seconds"] = round(time.time() - started, 2)
            result = None
            if summary["status"] == "succeeded" and args.question != "":
                from sitekb import query

                # The snapshot this run published, whichever alias it went to (a rerun keeps its own).
                # Three pages, one passage each: the sample shows what the snapshot knows, not one page thrice.
                result = query.search(conn, settings, args.question or DEFAULT_QUESTION, site=config.name, k=3,
                                      snapshot_id=summary["snapshot_id"], mode=args.mode,
                                      ranking=query.Ranking(per_page=1))
        if args.json:
            _print_json({**summary, "sample_search": [p.as_dict() for p in result] if result else []})
        else:
            print(report.format_summary(summary))
            if result:
                print()
                print(report.format_passages(result.passages, args.question or DEFAULT_QUESTION))
    return 0 if summary["status"] == "succeeded" else 1


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar of the long stages on a terminal; nothing when stderr is a file or a pipe (logs)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        def advance(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=done, total=total)

        yield advance


# -- db ---------------------------------------------------------------------

def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb import store
    from sitekb.store import embedded

    if settings.database_url and args.action in ("start", "stop"):
        print(f"SITEKB_DATABASE_URL is set ({store.redact(settings.database_url)}); the embedded database is not used.")
        return 0
    if args.action == "start":
        url = embedded.start(settings.home)
        with store.connection(url) as conn:
            applied = store.migrate(conn)
        print(f"embedded Postgres running: {url}" + (f" (applied migrations {applied})" if applied else ""))
    elif args.action == "stop":
        print("stopped" if embedded.stop(settings.home) else "not running")
    elif args.action == "status":
        if settings.database_url:
            with store.connection(settings.database_url) as conn:
                version = store.server_version(conn)
            info = {"external": True, "url": store.redact(settings.database_url), "server_version": version}
        else:
            info = {"external": False, **embedded.status(settings.home)}
        _print_json(info) if args.json else print("\n".join(f"{k:10} {v}" for k, v in info.items()))
        return 0 if info.get("running", True) else 1
    elif args.action == "url":
        print(store.database_url(settings, start_embedded=False))
    elif args.action == "migrate":
        with connect(settings):
            pass
        print("schema up to date")
    return 0


def cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.orchestration.runner import airflow

    return airflow(settings, args.args)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from sitekb.demo.server import serve_demo_site

    server = serve_demo_site(host=args.host, port=args.port)
    warning = server.exposure_warning()
    if warning:
        print(warning, file=sys.stderr)
    print(f"demo site at {server.base_url} (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


# -- parser -----------------------------------------------------------------

USAGE_EXIT = 64   # sysexits' EX_USAGE: the command line is wrong (2 means the configuration is)


class _Parser(argparse.ArgumentParser):
    """argparse, with its own exit code for a wrong command line (argparse's 2 is sitekb's config error)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from sitekb.commands import completion, crawl, embeddings, ledgers, quality, rebuild, report, snapshots
    from sitekb.commands import corrections, explain, messaging
    from sitekb.stages import NAMES

    parser = _Parser(
        prog="sitekb", description="Turn a website into versioned, queryable knowledge snapshots for chatbots.",
    )
    parser.add_argument("--version", action="version", version=f"sitekb {__version__}")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="what sitekb logs to stderr (default: info for `run`, warning for the rest)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one refresh of a site: crawl, validate, embed, build, publish",
                         description="Run one refresh of a site and print the summary and a sample search. "
                                     "Each stage logs what it did to stderr.")
    run.add_argument("site", nargs="?", help="site config: a name under dags/sites/ (e.g. demo) or a YAML path")
    run.add_argument("--start-url", help="crawl an ad-hoc site from this URL (or serve SITE from this origin)")
    run.add_argument("--allow-private", action="store_true",
                     help="with --start-url: allow a loopback/private address (refused by default)")
    run.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to publish to (default: {DEFAULT_ALIAS})")
    run.add_argument("--full", action="store_true", help="full recrawl: ignore ETag/Last-Modified")
    run.add_argument("--engine", choices=("local", "airflow"), default="local",
                     help="local: stages in this process; airflow: the site's DAG (sitekb_SITE) via `airflow dags test`")
    run.add_argument("--dry-run", action="store_true", help="crawl and chunk, then report tokens and cost; embed nothing")
    run.add_argument("--from", dest="from_stage", choices=NAMES, metavar="STAGE",
                     help=f"run STAGE and the stages after it again for the site's newest run, which keeps what "
                          f"the earlier stages made (stages: {', '.join(NAMES)})")
    run.add_argument("--run", dest="run_id", metavar="RUN_ID", help="with --from: the run to take up (default: the "
                                                                    "site's newest)")
    run.add_argument("--force", action="store_true",
                     help="with --from: take up a run still marked running (its process was killed)")
    run.add_argument("--take-over", action="store_true",
                     help="another run of the site still marked running is dead (killed elsewhere): mark it "
                          "failed and run (one run of a site at a time; a dead run on this host is found alone)")
    run.add_argument("--question", default=None, help="sample question to search after publishing ('' for none)")
    run.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help="search mode of the sample search")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_run)

    dbp = sub.add_parser("db", help="manage the embedded database (start|stop|status|url|migrate)")
    dbp.add_argument("action", choices=("start", "stop", "status", "url", "migrate"))
    dbp.add_argument("--json", action="store_true", help="machine-readable status")
    dbp.set_defaults(func=cmd_db)

    demo = sub.add_parser("demo", help="serve the bundled demo site until Ctrl-C")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to bind (default: 127.0.0.1; 0.0.0.0 serves every interface, with a warning)")
    demo.add_argument("--port", type=int, default=8765, help="port to listen on (a free one if busy)")
    demo.set_defaults(func=cmd_demo)

    af = sub.add_parser("airflow", help="run the `airflow` CLI with sitekb's environment (e.g. `standalone`)",
                        description="Runs `airflow ARGS...` with AIRFLOW_HOME under SITEKB_HOME, the sitekb DAGs "
                                    "and the database URL set, e.g. `sitekb airflow standalone`.")
    af.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to airflow")
    af.set_defaults(func=cmd_airflow)

    for family in (quality, ledgers, snapshots, crawl, embeddings, report, explain, corrections, messaging,
                   rebuild, completion):
        family.register(sub)
    from sitekb.commands import examples

    examples.attach(parser)
    return parser


class _LogFormat(logging.Formatter):
    """``12:00:01 stages.embed: ...``: sitekb's logger names without the package prefix."""

    def format(self, record: logging.LogRecord) -> str:
        record.short = record.name.removeprefix("sitekb.")
        return super().format(record)


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (a progress bar redirects it above itself)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str) -> None:
    """sitekb's logs at ``level`` on stderr; other libraries' warnings and errors only (whatever level they set)."""
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(_LogFormat("%(asctime)s %(short)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.name.split(".")[0] == "sitekb")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("sitekb").setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or ("info" if args.command == "run" else "warning"))
    try:
        settings = Settings.from_env()
        return args.func(args, settings)
    except SitekbError as exc:
        _print_error(exc)
        return exc.exit_code
    except TransientError as exc:
        _print_error(exc, "a temporary failure: try again later")
        return exc.exit_code
    except KeyboardInterrupt:
        print("sitekb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`sitekb ... | head`): nothing left to say to it. Point stdout at /dev/null
        # so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        # A connection lost outside a run's stages (the engine words those itself): one line, exit 3.
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(exc, psycopg.OperationalError):
            raise
        lost = database_lost(exc, "", ". Is the database running? `sitekb db status` checks the embedded one; "
                                      "for an external server check SITEKB_DATABASE_URL")
        _print_error(lost)
        return lost.exit_code


def _print_error(exc: SitekbError | TransientError, note: str = "") -> None:
    """The one line of an error: its message, the run and stage it stopped, the note, with no secret."""
    where = f"run {exc.run_id}, stage {exc.stage}" if exc.run_id and exc.stage else ""
    extra = "; ".join(part for part in (where, note) if part)
    message = ""
    for line in filter(None, (line.strip() for line in str(exc).splitlines())):  # a list of problems, one line
        message += (" " if not message or message.endswith(":") else "; ") + line
    message = message.strip()
    print(f"sitekb: error: {redact(message)}" + (f" ({redact(extra)})" if extra else ""), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
