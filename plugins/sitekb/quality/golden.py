"""The golden questions of a site: checked against a snapshot's pages, asked of it, judged.

- :func:`check_pages` (new snapshot): every ``expected_url`` must be a page of
  the snapshot; one that is not is named with the closest pages by path (and
  whether the run quarantined it), since a question that cannot find its page
  would only ever score 0.
- :func:`score` asks each question through the one query path (the
  ``sitekb_api.search`` frontends call) and counts those whose page is in the
  top ``golden_k``; :func:`live_score` is the live snapshot's, reused from its
  own evaluation while the questions are the same.
- :func:`judge` turns both into gate failures (check ``golden_questions``):
  an expected URL that is no page; fewer hits than ``golden_min_share`` of the
  questions (always, so a first snapshot, or one after a live snapshot that
  answers nothing, is judged too); fewer hits than the live snapshot, beyond
  ``golden_tolerance``.

Expected and found URLs are compared the way people write them
(:mod:`sitekb.urls`): ``/help/reset-password`` is ``/help/reset-password.html``.

Settings read (passed in): the site config's ``golden_questions``,
``golden_k``, ``golden_mode``, ``golden_tolerance``, ``golden_min_share`` and
``crawl.strip_query_params``.
"""

from __future__ import annotations

import hashlib
import json
import math

import psycopg

from sitekb.passages import DEFAULT_PER_PAGE
from sitekb.quality.checks import Failure
from sitekb.settings import Settings
from sitekb.sites import SiteConfig
from sitekb.store import documents, snapshot_tables, snapshots
from sitekb.urls import PageIndex, PageRef

CHECK = "golden_questions"
# How an expected URL is matched; part of the questions' hash, so that a live
# score stored under an older way of matching is measured again, like for like.
MATCHING = 2


def expected(site: SiteConfig, url: str) -> PageRef:
    """The page a golden question's ``expected_url`` names on ``site``."""
    return PageRef.parse(site.absolute(url), ignore_params=site.crawl.strip_query_params)


def found(site: SiteConfig, url: str) -> PageRef:
    """The page a crawled or returned URL is."""
    return PageRef.parse(url, ignore_params=site.crawl.strip_query_params, any_query=False)


def check_pages(conn: psycopg.Connection, site: SiteConfig, snap: snapshots.Snapshot, run_id: str) -> list[dict]:
    """The golden questions whose expected URL is no page of ``snap``, each with the closest pages."""
    # Every page of the snapshot: a diff from nothing lists them all.
    index = PageIndex((page.url for page in snapshot_tables.diff(conn, None, snap).added),
                      ignore_params=site.crawl.strip_query_params)
    refs = [(g, expected(site, g.expected_url)) for g in site.golden_questions]
    missing = [(g, ref) for g, ref in refs if not index.find(ref)]
    if not missing:
        return []
    held = [d for d in documents.held_back(conn, site.name) if d["run_id"] == run_id and d["status"] == "quarantined"]
    out = []
    for golden, ref in missing:
        quarantined = [d for d in held if ref.matches(found(site, d["url"]))]
        out.append({
            "question": golden.question, "expected_url": golden.expected_url,
            "closest": index.closest(ref),
            "quarantined": {d["url"]: sorted({f["check"] for f in d["failures"] or []}) for d in quarantined},
        })
    return out


def score(conn: psycopg.Connection, settings: Settings, site: SiteConfig, snap: snapshots.Snapshot,
          unmatched: list[dict] | None = None) -> dict:
    """How many golden questions find their expected page in the top-k of ``snap`` (published or not).

    Questions in ``unmatched`` (from :func:`check_pages`) are missed without
    being asked: their page is not in the snapshot.
    """
    from sitekb import query

    unmatched = unmatched or []
    skip = {u["question"] for u in unmatched}
    hits, missed = 0, []
    for golden in site.golden_questions:
        if golden.question not in skip:
            ref = expected(site, golden.expected_url)
            # Ranked as the HTTP API ranks for frontends: at most DEFAULT_PER_PAGE passages a page.
            result = query.search(conn, settings, golden.question, site=site.name, snapshot_id=snap.snapshot_id,
                                  k=site.golden_k, mode=site.golden_mode, unpublished=True,
                                  ranking=query.Ranking(per_page=DEFAULT_PER_PAGE))
            if any(ref.matches(found(site, p.url)) for p in result):
                hits += 1
                continue
        missed.append(golden.question)
    return {"asked": len(site.golden_questions), "hits": hits, "missed": missed, "k": site.golden_k,
            "unmatched": unmatched, "questions_hash": questions_hash(site)}


def live_score(conn: psycopg.Connection, settings: Settings, site: SiteConfig, live: snapshots.Snapshot) -> dict:
    """The live snapshot's golden score: stored at its own evaluation when the questions are the same."""
    stored = (live.quality or {}).get("golden") or {}
    if stored.get("questions_hash") == questions_hash(site):
        return stored
    return score(conn, settings, site, live)


def min_hits(site: SiteConfig) -> int:
    """How many golden questions must find their page: ``golden_min_share`` of them, rounded up."""
    # round() first: 0.7 * 10 is 7.000000000000001 in floating point, and must ask for 7.
    return math.ceil(round(site.golden_min_share * len(site.golden_questions), 9))


def judge(golden: dict, live_golden: dict | None, site: SiteConfig) -> list[Failure]:
    """The gate failures of a golden score (from :func:`score`) against the live snapshot's, if any."""
    failures = []
    for u in golden.get("unmatched") or []:
        if u["quarantined"]:
            why = "; ".join(f"{url} was quarantined ({', '.join(checks) or 'see sitekb quarantine'})"
                            for url, checks in u["quarantined"].items())
            advice = "approve it (`sitekb quarantine approve URL --reason ...`) or fix the page"
        else:
            why = "closest pages: " + (", ".join(u["closest"]) or "none, the snapshot has no pages")
            advice = "correct expected_url in the site config, or make sure the crawl reaches the page"
        failures.append(Failure(
            CHECK, u["expected_url"], "a page of the snapshot",
            f"golden question {u['question']!r} expects {u['expected_url']}, which is no page of this snapshot; "
            f"{why}; {advice}",
        ))
    needed = min_hits(site)
    if golden["hits"] < needed:
        failures.append(Failure(
            CHECK, golden["hits"], needed,
            f"{golden['hits']}/{golden['asked']} golden questions find their page in the top {golden['k']}, "
            f"at least {needed} must (golden_min_share {site.golden_min_share:g}); missed: {golden['missed']}",
        ))
    if live_golden and golden["hits"] < live_golden["hits"] - site.golden_tolerance:
        lost = sorted(set(golden["missed"]) - set(live_golden["missed"]))
        failures.append(Failure(
            CHECK, golden["hits"], live_golden["hits"] - site.golden_tolerance,
            f"answers {golden['hits']}/{golden['asked']} golden questions, live answers "
            f"{live_golden['hits']}; lost: {lost}",
        ))
    return failures


def questions_hash(site: SiteConfig) -> str:
    """A fingerprint of what a golden score measures: the questions, k, mode and the way URLs are matched."""
    payload = json.dumps([g.model_dump() for g in site.golden_questions]
                         + [site.golden_k, site.golden_mode, MATCHING], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
