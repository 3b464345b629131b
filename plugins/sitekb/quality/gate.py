"""The quality gate of one run, over the store: documents, chunks, batch.

- :func:`validate_documents` (validate stage): measures every extracted
  document (:mod:`~sitekb.quality.measures`), with the hidden text of its
  stored page (:func:`hidden_text_of_run`: the extractor dropped it, so the
  page is parsed again here), flags exact and near duplicates across the crawl
  (:mod:`~sitekb.quality.duplicates`), validates the measures with the
  ``sitekb.documents`` suite and marks each document accepted or quarantined
  with every failed check and its measured value. A failing document with an
  approval for its exact content hash is accepted
  (:mod:`~sitekb.quality.quarantine`). The safety checks follow the site's
  policies: ``report`` flags a page and keeps it (``flagged_urls``, and the
  failures under ``flags`` in its measures), ``quarantine`` holds it back,
  ``block`` holds it back and names it in ``blocked_urls``, which fails the run.
  A page that uses a retired term under a ``quarantine`` messaging rule
  (:mod:`sitekb.messaging`) fails check ``messaging`` the same way: it is
  quarantined with the rule's reason, and an approval lets it through.
- :func:`check_chunks` (end of the chunk stage): the ``sitekb.chunks`` suite;
  a document with nothing to embed or a chunk over the model's token limit is
  quarantined and its chunks dropped.
- :func:`judge_batch` (evaluate stage): the ``sitekb.batch`` suite over the
  run's totals against the live snapshot.
- :func:`judge_messaging` (evaluate stage): the messaging rules over the built
  snapshot; the findings are kept with it (:mod:`sitekb.store.messaging`) and a
  ``block`` rule that a page still breaks rejects it.

All three write Data Docs to :func:`data_docs_dir` when the site config's
``quality.data_docs`` is on. Settings read (passed in): ``Settings.home``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path

import psycopg

from sitekb import messaging
from sitekb.quality import duplicates, measures, suites
from sitekb.quality.checks import Failure
from sitekb.quality.runner import Outcome, validate_rows
from sitekb.sites import QualityConfig, SiteConfig
from sitekb.store import approvals, chunks, documents, pages
from sitekb.store import messaging as messaging_store

log = logging.getLogger(__name__)


def data_docs_dir(site: SiteConfig, run_id: str, home: Path) -> Path | None:
    """<home>/data_docs/<site>/<run_id>/ (None when the site turned Data Docs off)."""
    if not site.quality.data_docs:
        return None
    return home / "data_docs" / site.name / _folder_name(run_id)


def _folder_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def prune_data_docs(site: SiteConfig, home: Path, keep_run_ids: set[str]) -> list[str]:
    """Delete the Data Docs folders of the site's runs not in ``keep_run_ids``; return the folders deleted.

    Each run's Data Docs take megabytes; they are kept as long as the run or its snapshot is.
    """
    import shutil

    root = home / "data_docs" / site.name
    if not root.is_dir():
        return []
    keep = {_folder_name(run_id) for run_id in keep_run_ids}
    deleted = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in keep):
        shutil.rmtree(folder, ignore_errors=True)
        deleted.append(folder.name)
    return deleted


def hidden_text_of_run(conn: psycopg.Connection, site: SiteConfig, run_id: str,
                       skip: Collection[str] = ()) -> dict[str, dict]:
    """The hidden-text measures of every page the run kept but ``skip``, by URL (streamed: one page body at a time)."""
    from sitekb.extract import hidden_text_of_page

    selectors = tuple(site.opt_out.nosnippet_selectors)
    return {page.url: measures.measure_hidden(hidden_text_of_page(page.body, page.content_type, selectors))
            for page in pages.kept_pages(conn, site.name, run_id) if page.url not in skip}


def validation_inputs(site: SiteConfig) -> str:
    """What a document's verdict depends on besides its page and text: the quality config, the nosnippet
    selectors and sitekb's version. A document validated before with the same inputs is not measured again."""
    import hashlib
    import json

    from sitekb import __version__

    recipe = {"quality": site.quality.model_dump(mode="json"), "nosnippet": list(site.opt_out.nosnippet_selectors),
              "sitekb": __version__}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# What a document's own measures are (measures.measure_document, hidden text included): a document
# validated before as it is keeps them; the duplicate flags and the safety flags are judged again.
_DUPLICATE_KEYS = ("duplicate_of", "near_duplicate_of", "similarity")


def document_rows(docs: list[Mapping], config: QualityConfig,
                  hidden: Mapping[str, Mapping] | None = None,
                  measured: Mapping[str, Mapping] | None = None,
                  signatures: dict[str, bytes | None] | None = None) -> list[dict]:
    """The measured rows of the document suite, hidden-text measures (by URL) and duplicate flags included.

    ``measured``: earlier measures of documents validated before as they are (by URL), used
    instead of measuring them and parsing their pages again. ``signatures``: the stored
    near-duplicate signatures of documents validated before (by URL); filled with every
    document's (:func:`sitekb.quality.duplicates.signature`), for the caller to store.
    """
    measured = measured or {}
    rows = []
    for doc in docs:
        earlier = measured.get(doc["url"])
        if earlier is not None:
            rows.append({k: v for k, v in earlier.items()
                         if k not in (*_DUPLICATE_KEYS, "flags", "validation_inputs")})
        else:
            row = measures.measure_document(doc)
            row.update((hidden or {}).get(row["url"], {}))
            rows.append(row)
    # Which copy of a duplicate cluster is kept depends on which copies are otherwise healthy.
    others = [c for c in suites.document_checks(config) if c.name not in ("duplicate", "near_duplicate")]
    known = dict(signatures or {})
    found = duplicates.find_duplicates(
        [duplicates.Text(d["url"], d.get("markdown") or "", d.get("canonical_url"),
                         healthy=not any(c.judge(row) for c in others), signature=known.get(d["url"]))
         for d, row in zip(docs, rows)],
        config.near_duplicate_threshold, signatures=signatures,
    )
    for row in rows:
        dup = found.get(row["url"])
        row["duplicate_of"] = dup.of if dup and dup.exact else None
        row["near_duplicate_of"] = dup.of if dup and not dup.exact else None
        row["similarity"] = dup.similarity if dup else None
    return rows


def validate_documents(conn: psycopg.Connection, run_id: str, site: SiteConfig,
                       docs_dir: Path | None = None) -> dict:
    """Accept or quarantine every document of the run; return counts for the run record.

    A document an earlier run validated as it is (same page body, text and validation
    inputs, :func:`validation_inputs`) keeps its measures and its document-suite failures: its
    page is not parsed again and the suite judges only the other documents (none: the suite
    does not run). The duplicate checks look at every document each time (a document validated
    before brings its stored signature, so only the others' texts are hashed), and a document whose
    duplicate flags changed is judged again; approvals, the safety policies and the messaging
    rules are applied to every document.
    """
    inputs = validation_inputs(site)
    before = documents.validated_before(conn, run_id, inputs)
    docs = documents.for_validation(conn, run_id)
    stored = {url: b["dedup_signature"] for url, b in before.items()}
    signatures = dict(stored)
    rows = document_rows(docs, site.quality, hidden_text_of_run(conn, site, run_id, skip=before),
                         {url: b["measures"] for url, b in before.items()}, signatures)
    checks = suites.document_checks(site.quality)
    names = {c.name for c in checks}
    kept = {row["url"] for row in rows if row["url"] in before
            and all(row.get(k) == before[row["url"]]["measures"].get(k) for k in _DUPLICATE_KEYS)}
    fresh = [row for row in rows if row["url"] not in kept]
    outcome = validate_rows(suites.DOCUMENTS, checks, fresh, data_docs_dir=docs_dir, run_name=run_id) if fresh \
        else Outcome(suites.DOCUMENTS, "none (every document validated before as it is)", 0)
    for url in kept:
        earlier = [Failure(**f) for f in before[url]["failures"] if f.get("check") in names]
        if earlier:
            outcome.failures[url] = earlier
    for row in rows:
        row["validation_inputs"] = inputs
    reported, blocking = suites.reported_checks(site.quality), suites.blocking_checks(site.quality)
    approved_texts = approvals.for_site(conn, site.name)
    verdicts, quarantined, approved, flagged, blocked = [], {}, {}, {}, {}
    by_check: Counter[str] = Counter()
    for doc, row in zip(docs, rows):
        # A page still using a retired term under a `quarantine` messaging rule fails like any document check.
        failures = [*outcome.failures.get(doc["url"], []),
                    *messaging.quarantine_failures(site.messaging.rules, doc["title"], doc["markdown"])]
        # Kept in the measures, not the failures: a failure quarantines, a flag under `report` does not.
        flags = [f for check in reported if (f := check.judge(row)) is not None]
        if flags:
            row["flags"] = [f.as_dict() for f in flags]
            flagged[doc["url"]] = [f"{f.check}: {f.message}" for f in flags]
        approval = approved_texts.get((doc["url"], doc["content_hash"])) if failures else None
        status = "quarantined" if failures and approval is None else "accepted"
        if status == "quarantined":
            quarantined[doc["url"]] = [f.check for f in failures]
            by_check.update(f.check for f in failures)
            if blocking_failed := sorted({f.check for f in failures} & blocking):
                blocked[doc["url"]] = blocking_failed
        elif approval is not None:
            approved[doc["url"]] = approval["reason"]
        verdicts.append((doc["url"], status, [f.as_dict() for f in failures], row,
                         approval["id"] if approval else None))
    documents.set_verdicts(conn, run_id, verdicts, (site.quality.languages or ['en'])[0], signatures=signatures)
    return {"documents": len(docs), "accepted": len(docs) - len(quarantined), "quarantined": len(quarantined),
            "approved": len(approved), "flagged": len(flagged), "blocked": len(blocked),
            "quarantined_urls": quarantined, "approved_urls": approved, "flagged_urls": flagged,
            "blocked_urls": blocked, "failed_checks": dict(sorted(by_check.items())), "engine": outcome.engine,
            "data_docs": outcome.data_docs, "suite_seconds": round(outcome.seconds, 3),
            "validated_before": len(kept), "judged": len(fresh),
            # Texts the near-duplicate check hashed: the others brought their stored signature.
            "dedup_hashed": sum(1 for doc in docs if signatures.get(doc["url"]) != stored.get(doc["url"]))}


def blocked_message(site: SiteConfig, run_id: str, blocked: Mapping[str, list[str]]) -> str:
    """One line for a run the safety checks blocked: which pages, which checks, what to do."""
    shown = "; ".join(f"{url} ({', '.join(checks)})" for url, checks in sorted(blocked.items())[:5])
    more = f" and {len(blocked) - 5} more" if len(blocked) > 5 else ""
    return (f"run {run_id} of {site.name!r} was blocked by the quality gate: {len(blocked)} page(s) failed a "
            f"check whose policy is block: {shown}{more}. Nothing was published; `sitekb quarantine` shows each "
            "page's reason. Remove the text from the site, approve a page that is legitimate (`sitekb quarantine "
            "approve URL --reason ...`), or set quality.prompt_injection / quality.hidden_text to quarantine, "
            "then run again.")


def check_chunks(conn: psycopg.Connection, run_id: str, max_tokens: int, docs_dir: Path | None = None, *,
                 passed_before: Collection[str] = ()) -> dict:
    """Quarantine accepted documents with no chunk or a chunk over ``max_tokens``; drop their chunks.

    ``passed_before``: documents whose chunks were copied from a run that cut them with the
    same inputs (the same limit), where they passed: not judged again (a refresh with 1% of
    the pages changed judges 1% of them, and Data Docs show those).
    """
    skip = set(passed_before)
    rows = [row for row in chunks.per_document(conn, run_id) if row["url"] not in skip]
    outcome = validate_rows(suites.CHUNKS, suites.chunk_checks(max_tokens), rows,
                            data_docs_dir=docs_dir, run_name=run_id)
    if outcome.failures:
        documents.quarantine_after_chunking(
            conn, run_id, {url: [f.as_dict() for f in failed] for url, failed in outcome.failures.items()})
    return {"quarantined_after_chunking": {url: [f.check for f in fs] for url, fs in outcome.failures.items()},
            "chunk_suite_engine": outcome.engine, "chunk_suite_judged": len(rows)}


def judge_messaging(conn: psycopg.Connection, site: SiteConfig, snap) -> tuple[list[Failure], list[dict]]:
    """Scan the built snapshot for the site's messaging rules and keep the findings with it; the failures of
    its ``block`` rules and the per-rule summary for its quality record (evaluate stage; ``snap`` is a
    :class:`sitekb.store.snapshots.Snapshot`).

    The pages are the run's accepted documents (title and text), the chunks those of the snapshot's table
    (what frontends will read); the pages a ``quarantine`` rule held back are listed too.
    """
    rules = site.messaging.rules
    found: list[messaging.Finding] = []
    if rules:
        # Read before the pages are streamed: the stream holds the connection until it ends.
        held_back = messaging_store.held_back(conn, snap.run_id)
        found = messaging.scan(rules, messaging_store.snapshot_pages(conn, snap.run_id), held_back=held_back)
    urls = messaging.hit_urls(found)
    if urls and snap.table_name:
        messaging.attach_chunks(rules, found, messaging_store.snapshot_chunks(conn, snap.table_name, urls))
    messaging_store.replace(conn, snap.snapshot_id, found)
    for finding in found:
        if finding.pages or finding.held_back:
            log.info("messaging rule %r (%s): %d page(s), %d chunk(s) still use it; %d held back",
                     finding.rule, finding.policy, len(finding.pages), len(finding.chunk_ids),
                     len(finding.held_back))
    return messaging.block_failures(found, snap.snapshot_id), messaging_store.summary(conn, snap.snapshot_id)


def judge_batch(totals: Mapping, live_counts: Mapping | None, site: SiteConfig, run_id: str,
                docs_dir: Path | None = None) -> tuple[list[Failure], dict]:
    """Failures of the batch suite and the measured row, for the snapshot's quality summary."""
    row = measures.measure_batch(totals, live_counts)
    outcome: Outcome = validate_rows(suites.BATCH, suites.batch_checks(site.quality), [row], id_column="run",
                                     data_docs_dir=docs_dir, run_name=run_id)
    return outcome.failures.get("batch", []), {"measures": row, **outcome.summary()}
