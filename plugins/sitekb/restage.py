"""Rebuild: stage the pages the site's newest crawl kept, judged again by the current config, without a request.

A rebuild (``sitekb rebuild SITE``, or the site's DAG with the ``rebuild``
param) is a new run whose params name its source, ``rebuild_of``: the site's
newest run whose crawl stage finished (:func:`plan`). Its crawl stage calls
:func:`run` instead of crawling, and every later stage (extract, validate,
chunk, embed, build, evaluate, publish) runs as in any refresh, with the
current config: new nosnippet selectors, quality thresholds, messaging rules
and chunking apply there, the embedding cache embeds only chunk texts it has
not seen, and the gate, the diff and the golden questions judge the snapshot.

Judged again here, with the crawler's own rules (:mod:`sitekb_crawlers.parsers`)
on each stored page, its stored body and its stored response headers:

- scope (``Scope.why_out``): ``crawl.include_patterns`` / ``exclude_patterns``,
  allowed domains and ports, private addresses;
- ``crawl.content_types``, from the stored Content-Type;
- opt-outs (``parsers.opt_out``): robots meta and X-Robots-Tag values
  (``opt_out.robots_values``), TDM reservations in a meta tag or header,
  ``opt_out.labels`` such as ``#do_NOT_train_on_this``, the opt-in mode. Every
  stored body is read again, also those an incremental crawl only saw as 304s
  (the stored body lacks the nosnippet sections the crawler cut, and a label there).

Kept as the crawl left it, since judging it again needs the network or
another page: robots.txt, ``/.well-known/tdmrep.json``, redirects, canonical
copies, HTTP errors and fetch failures (carried into the new run's ledgers, so
the gate counts them as it did), URL normalisation (``strip_query_params``),
crawl limits (``max_pages``, ``max_depth``, trap guards) and anything that
changed on the site since. So a rebuild can leave pages out, never bring in
one the crawl did not keep, except a page an earlier rebuild left out by a
URL or content-type rule that no longer applies (its stored fetch is kept for
that). An opt-out found now erases the page's stored content, as in a crawl.

The stored pages are judged under the origin they were crawled from: the
current config is rebased onto the source crawl's base URL when it differs
(the demo served on another port). Settings read: none beyond the site config
and the run's params.
"""

from __future__ import annotations

import logging
from collections import Counter

import psycopg

from sitekb.errors import NotFound, SitekbError
from sitekb.reasons import LIMIT_RULES
from sitekb.sites import SiteConfig
from sitekb.stages.context import RunContext, StageResult
from sitekb.store import ledger, runs
from sitekb.store import restage as store

log = logging.getLogger(__name__)

PDF = "application/pdf"
# Rules of the site config a later rebuild may take back: the page's stored fetch is kept.
RETRACTABLE = frozenset({"excluded-pattern", "not-included", "off-domain", "off-port", "scheme", "private-address",
                         "content-type"})
# What the crawler counts as skipped rather than excluded (a page it does not read, a limit it reached).
SKIPPED = frozenset({"content-type", "not-text", "unparseable", "unreadable-pdf", "no-text", "too-large"}) | LIMIT_RULES


def plan(conn: psycopg.Connection, site: SiteConfig, source: str | None = None) -> tuple[str, SiteConfig]:
    """The run a rebuild of ``site`` stages from (``source``, or the site's newest crawl), and the config it runs
    with (rebased onto that crawl's origin).

    NotFound when the site has no finished crawl to stage from.
    """
    source = source or store.source_run(conn, site.name)
    if source is None:
        running = store.running_run(conn, site.name)
        raise NotFound(
            f"site {site.name!r} has nothing staged to rebuild from: no crawl of it has finished"
            + (f" (run {running} is running now; wait for it)" if running else "")
            + f". `sitekb run {site.name}` crawls it first; nothing was changed"
        )
    crawled = runs.load(conn, source).site
    if crawled.base_url != site.base_url:
        log.info("rebuild of %s: the stored pages were crawled from %s; the config is rebased onto it (was %s)",
                 site.name, crawled.base_url, site.base_url)
        site = site.with_base_url(crawled.base_url)
    return source, site


class _Rules:
    """The crawler's rules of one site config, built once for every stored page."""

    def __init__(self, site: SiteConfig):
        from sitekb_crawlers import parsers, pdf  # lxml and pypdf: only when a rebuild stages

        self.parsers = parsers
        self.site = site
        self.scope = parsers.Scope.of(site)
        self.agent = parsers.agent_token(site.crawl.identity)
        self.accepted = {t for t in site.crawl.content_types if t != PDF or pdf.available()}

    def verdict(self, page: store.Staged) -> ledger.Exclusion | None:
        """Why the current config leaves the stored page out (None: it stays in), as the crawler would say it."""
        parsers = self.parsers
        rule = self.scope.why_out(page.url)
        if rule is not None:
            return ledger.Exclusion(page.url, rule, f"{rule} (site config crawl section; judged by a rebuild)")
        media = parsers.media_type(page.content_type) or "text/html"
        if media not in self.accepted:
            return ledger.Exclusion(page.url, "content-type", media)
        headers = {k.lower(): v for k, v in page.headers.items()}
        facts = None if media == PDF else parsers.read_page(page.body or "", page.url, self.agent)
        signal = parsers.opt_out(page.body or "", headers, self.site, facts, self.agent)
        if signal is not None:
            return ledger.Exclusion(page.url, signal.rule, signal.detail)
        return None


def run(ctx: RunContext) -> StageResult:
    """The crawl stage of a rebuild: take up the source crawl's pages, judged by the run's config."""
    source = str(ctx.params["rebuild_of"])
    site, conn = ctx.site, ctx.conn
    rules = _Rules(site)
    kept: list[str] = []
    left_out: list[ledger.Exclusion] = []
    withdrawn: list[ledger.Exclusion] = []
    let_in: list[str] = []
    for page in store.candidates(conn, site.name, source, ctx.run_id):
        judged = page.body is not None and page.status in (200, 304) and (
            page.excluded_rule is None or page.excluded_rule in RETRACTABLE)
        if not judged:
            continue  # an error status, or the crawl's own exclusion: its verdict stands
        verdict = rules.verdict(page)
        if verdict is None:
            kept.append(page.url)
            if page.excluded_rule is not None:
                let_in.append(page.url)
        elif verdict.rule in rules.parsers.CONSENT_RULES:
            withdrawn.append(verdict)
        else:
            left_out.append(verdict)
    if not kept and not left_out and not withdrawn:
        raise NotFound(f"run {source} of {site.name!r} kept no page to rebuild from; `sitekb run {site.name}` "
                       "crawls the site again")
    if not kept:
        raise SitekbError(
            f"the current config of {site.name!r} leaves out every page the crawl (run {source}) kept "
            f"({_counts(Counter(e.rule for e in [*left_out, *withdrawn]))}); nothing was changed. "
            "Check crawl.include_patterns / exclude_patterns and opt_out in the site file"
        )
    store.stage(conn, site.name, source, ctx.run_id, kept=kept, left_out=left_out, withdrawn=withdrawn,
                let_in=let_in, retractable=sorted(RETRACTABLE))
    source_crawl = store.crawl_record(conn, source)
    now_out = Counter(e.rule for e in [*left_out, *withdrawn])
    for exclusion in [*left_out, *withdrawn]:
        log.info("rebuild of %s: %s is left out now (%s: %s)", site.name, exclusion.url, exclusion.rule,
                 exclusion.detail)
    failures = store.carried_failures(conn, ctx.run_id)
    counts = {"rebuild_of": source, "pages": len(kept), "not_modified": len(kept), "fetched": 0, "requests": 0,
              "bytes": 0, "excluded_now": sum(now_out.values()), "let_in_again": len(let_in),
              "failed_fetches": failures, "full": False, "full_reason": None}
    # Per rule, the URLs the new run's ledger leaves out: the crawl's carried over, and those left out now.
    ledgered = store.excluded_by_rule(conn, ctx.run_id)
    details = {"excluded": {rule: n for rule, n in ledgered.items() if rule not in SKIPPED},
               "skipped": {rule: n for rule, n in ledgered.items() if rule in SKIPPED},
               "errors": source_crawl.get("errors") or {},
               "excluded_now": {rule: sorted(e.url for e in [*left_out, *withdrawn] if e.rule == rule)
                                for rule in sorted(now_out)},
               "let_in_again": sorted(let_in)}
    return StageResult(
        counts=counts, details=details,
        summary=(f"rebuild of run {source}: {len(kept)} stored pages staged without a request; left out now "
                 f"{_counts(now_out)}; let in again {len(let_in)}; the crawl's verdicts kept (excluded "
                 f"{_counts(details['excluded'])}, skipped {_counts(details['skipped'])}, errors "
                 f"{_counts(details['errors'])}, {failures} failed fetches)"),
    )


def _counts(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"
