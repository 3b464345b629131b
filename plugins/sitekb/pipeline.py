"""One refresh run, stage by stage: crawl → extract → validate → chunk → embed →
build → evaluate → publish.

Each stage is a function of a run id that reads its input from Postgres,
writes its output to Postgres and returns a small dict of counts (what XCom
carries). Every stage can run twice: it replaces its own rows of the run in
one transaction, or relies on content-addressed keys. Timings and counts of
each stage are stored in ``sitekb.runs.stages`` for the run summary.

The Airflow DAG calls these functions one task each; ``sitekb run`` calls
:func:`run_refresh`, which runs them in order in-process.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import psycopg
from psycopg.rows import dict_row

from sitekb import db, quality, snapshots
from sitekb.errors import QualityGateFailed, SitekbError
from sitekb.settings import Settings
from sitekb.sites import SiteConfig, load_site

STAGES = ("crawl", "extract", "validate", "chunk", "embed", "build", "evaluate", "publish")


@dataclass
class Run:
    run_id: str
    site: SiteConfig
    params: dict


def new_run_id(prefix: str = "cli") -> str:
    return f"{prefix}__{datetime.now(timezone.utc):%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:6]}"


def resolve_site(site: str | SiteConfig, settings: Settings, overrides: dict | None = None,
                 start_url: str | None = None) -> SiteConfig:
    """The effective site config: file < environment < CLI overrides; a start URL rebases it."""
    if isinstance(site, SiteConfig):
        config = site
    else:
        merged = _merge(settings.site_overrides(), overrides or {})
        config = load_site(site, merged)
    if start_url:
        config = config.with_base_url(start_url)
    return config


def start_run(conn: psycopg.Connection, site: SiteConfig, run_id: str, params: dict | None = None) -> Run:
    """Record the run and its effective config (idempotent for a retried task)."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO sitekb.runs (run_id, site, params, config, config_hash)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (run_id) DO UPDATE SET status = 'running', error = NULL, finished_at = NULL""",
            (run_id, site.name, json.dumps(params or {}), site.model_dump_json(), site.config_hash()),
        )
    return Run(run_id, site, params or {})


def load_run(conn: psycopg.Connection, run_id: str) -> Run:
    row = conn.execute("SELECT config, params FROM sitekb.runs WHERE run_id = %s", (run_id,)).fetchone()
    if row is None:
        raise SitekbError(f"run {run_id!r} is unknown; it must be started with start_run first")
    return Run(run_id, SiteConfig.model_validate(row[0]), row[1])


@contextmanager
def stage(conn: psycopg.Connection, run_id: str, name: str) -> Iterator[dict]:
    """Time a stage and store its counts in runs.stages[name]."""
    result: dict = {}
    started = time.monotonic()
    yield result
    result["seconds"] = round(time.monotonic() - started, 3)
    with conn.transaction():
        conn.execute(
            "UPDATE sitekb.runs SET stages = stages || jsonb_build_object(%s::text, %s::jsonb) WHERE run_id = %s",
            (name, json.dumps(result, default=str), run_id),
        )


# -- stages -------------------------------------------------------------------

def crawl_stage(conn: psycopg.Connection, run: Run, database_url: str) -> dict:
    from sitekb.crawl import run_crawl

    with stage(conn, run.run_id, "crawl") as out:
        stats = run_crawl(run.site, run.run_id, database_url, full=bool(run.params.get("full_recrawl")))
        out.update(stats)
        out["pages"] = stats.get("fetched", 0) + stats.get("not_modified", 0)
    return out


def extract_stage(conn: psycopg.Connection, run: Run) -> dict:
    from sitekb.crawl import is_text_page, text_document
    from sitekb.extract import EXTRACTOR_VERSION, extract_document, strip_nosnippet

    selectors = tuple(run.site.opt_out.nosnippet_selectors)
    with stage(conn, run.run_id, "extract") as out:
        rows = []
        empty = 0
        # A named (server-side) cursor streams the pages; it needs a transaction.
        with conn.transaction(), conn.cursor(name="pages_of_run") as cur:
            cur.execute(
                """SELECT url, body, content_type FROM sitekb.pages
                   WHERE site = %s AND last_run_id = %s AND status IN (200, 304)
                     AND body IS NOT NULL AND excluded_rule IS NULL ORDER BY url""",
                (run.site.name, run.run_id),
            )
            for url, body, content_type in cur:
                if is_text_page(content_type):  # PDF text the crawler stored, not HTML
                    doc = text_document(body, url)
                else:
                    doc = extract_document(strip_nosnippet(body, selectors) if selectors else body, url)
                if doc is None or not doc.markdown.strip():
                    empty += 1
                    continue
                rows.append((
                    run.run_id, run.site.name, url, doc.content_hash, doc.title, doc.description, doc.author,
                    doc.published, doc.modified, doc.language, doc.canonical_url, list(doc.tags),
                    doc.markdown, doc.word_count, doc.visible_words,
                ))
        with conn.transaction():
            conn.execute("DELETE FROM sitekb.documents WHERE run_id = %s", (run.run_id,))
            with conn.cursor().copy(
                """COPY sitekb.documents (run_id, site, url, content_hash, title, description, author,
                       published, modified, language, canonical_url, tags, markdown, word_count,
                       visible_words)
                   FROM STDIN"""
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        out.update(documents=len(rows), empty=empty, extractor_version=EXTRACTOR_VERSION)
    return out


def validate_stage(conn: psycopg.Connection, run: Run) -> dict:
    """The document suite (sitekb.gate): accept or quarantine every document, with reasons."""
    from sitekb import gate

    with stage(conn, run.run_id, "validate") as out:
        out.update(gate.validate_documents(conn, run.run_id, run.site, gate.data_docs_dir(run.site, run.run_id)))
    return out


def embedding_plan(run: Run, settings: Settings | None = None):
    """The embedder of this run's config (constructed lazily; nothing loads until embed())."""
    from sitekb.embedding import embedder_for_site

    return embedder_for_site(run.site.embedding, settings)


def chunk_stage(conn: psycopg.Connection, run: Run, settings: Settings | None = None) -> dict:
    from sitekb.chunking import CHUNKER_VERSION, ChunkingConfig, chunk_document
    from sitekb.embedding import text_hash
    from sitekb.tokenization import get_tokenizer

    embedder = embedding_plan(run, settings)
    tokenizer = get_tokenizer(embedder.provider, embedder.model)
    cfg = run.site.chunking
    # Never above the model's input limit, whatever the site asks; a target above it shrinks with it.
    max_tokens = min(cfg.max_tokens or embedder.max_tokens, embedder.max_tokens)
    try:
        config = ChunkingConfig(
            target_tokens=min(cfg.target_tokens, max_tokens), max_tokens=max_tokens, template=cfg.template,
            overlap_tokens=min(cfg.overlap_tokens, min(cfg.target_tokens, max_tokens) - 1),
        )
    except ValueError as exc:
        from sitekb.errors import ConfigError

        raise ConfigError(f"site config `chunking` does not fit {embedder.model}: {exc}") from exc
    with stage(conn, run.run_id, "chunk") as out:
        chunks = tokens = 0
        with conn.cursor(row_factory=dict_row) as cur:
            docs = cur.execute(
                "SELECT url, title, markdown FROM sitekb.documents WHERE run_id = %s AND status = 'accepted'",
                (run.run_id,),
            ).fetchall()
        with conn.transaction():
            conn.execute("DELETE FROM sitekb.chunks WHERE run_id = %s", (run.run_id,))
            with conn.cursor().copy(
                """COPY sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                                       text_hash, token_count) FROM STDIN WITH (FORMAT BINARY)"""
            ) as copy:
                copy.set_types(["text", "text", "text", "text", "int4", "text[]", "text", "text", "bytea", "int4"])
                seen: set[str] = set()
                for doc in docs:
                    for chunk in chunk_document(doc["markdown"], url=doc["url"], title=doc["title"],
                                                tokenizer=tokenizer, config=config):
                        if chunk.chunk_id in seen:
                            continue  # identical chunk twice in one run: keep one
                        seen.add(chunk.chunk_id)
                        copy.write_row((
                            run.run_id, chunk.chunk_id, run.site.name, doc["url"], chunk.seq,
                            list(chunk.heading_path), chunk.text, chunk.embed_text,
                            text_hash(chunk.embed_text), chunk.token_count,
                        ))
                        chunks += 1
                        tokens += chunk.token_count
        # The post-chunk part of the quality gate: nothing to embed, or a chunk over the model's limit.
        from sitekb import gate

        checked = gate.check_chunks(conn, run.run_id, run.site, config.max_tokens,
                                    gate.data_docs_dir(run.site, run.run_id))
        if checked["quarantined_after_chunking"]:
            chunks, tokens = conn.execute(
                "SELECT count(*), coalesce(sum(token_count), 0) FROM sitekb.chunks WHERE run_id = %s", (run.run_id,)
            ).fetchone()
        # Full-text vectors of chunks whose content was never indexed before (the rest are cached).
        from sitekb import fulltext

        out.update(documents=len(docs), chunks=chunks, tokens=tokens, chunker_version=CHUNKER_VERSION,
                   tokenizer=tokenizer.name, max_tokens=config.max_tokens, **checked,
                   **fulltext.index_run(conn, run.run_id))
    return out


def embed_stage(conn: psycopg.Connection, run: Run, settings: Settings | None = None,
                log: Callable[[str], None] = print) -> dict:
    from sitekb.embedding import check_budget, embed_run, estimate_cost

    embedder = embedding_plan(run, settings)
    budget = run.site.embedding.budget_usd
    with stage(conn, run.run_id, "embed") as out:
        estimate = estimate_cost(conn, run.run_id, embedder)
        log(f"embedding: {estimate['texts_to_embed']} new texts, {estimate['tokens_to_embed']} tokens, "
            f"estimated cost ${estimate['estimated_usd']:.4f} at ${estimate['price_per_million_usd']}/M tokens "
            f"({embedder.provider}:{embedder.model})" + (f", budget ${budget:.4f}" if budget is not None else ""))
        check_budget(estimate, budget)  # before any request
        result = embed_run(conn, run.run_id, embedder, batch_size=run.site.embedding.batch_size,
                           budget_usd=budget, log=log)
        out.update(chunks=result.total, reused=result.reused, embedded=result.embedded,
                   requests=result.requests, model=embedder.model, dimensions=embedder.dimensions,
                   provider=embedder.provider, tokens_embedded=result.tokens, spent_usd=round(result.usd, 6),
                   model_load_seconds=round(result.model_load_seconds, 3),
                   texts_per_second=result.texts_per_second,
                   **{k: v for k, v in estimate.items() if k != "spent_usd"})
    return out


def build_stage(conn: psycopg.Connection, run: Run, settings: Settings | None = None) -> dict:
    from sitekb.chunking import CHUNKER_VERSION
    from sitekb.extract import EXTRACTOR_VERSION
    from sitekb.tokenization import get_tokenizer

    embedder = embedding_plan(run, settings)
    with stage(conn, run.run_id, "build") as out:
        with conn.transaction():
            snapshot_id = snapshots.create_record(
                conn, site=run.site.name, run_id=run.run_id, provider=embedder.provider, model=embedder.model,
                dimensions=embedder.dimensions, tokenizer=get_tokenizer(embedder.provider, embedder.model).name,
                config_hash=run.site.config_hash(), extractor_version=EXTRACTOR_VERSION,
                chunker_version=CHUNKER_VERSION,
                # Queries must reach the server that embedded the chunks (sitekb.search).
                base_url=getattr(embedder, "base_url", None),
                api_key_env=run.site.embedding.api_key_env if embedder.provider == "openai" else None,
            )
        counts = snapshots.build(conn, snapshot_id, run.run_id, embedder.model, embedder.dimensions)
        out.update(snapshot_id=snapshot_id, **counts)
    return out


def _run_totals(conn: psycopg.Connection, run: Run) -> dict:
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE status BETWEEN 200 AND 399 OR status = 304),
                  count(*) FILTER (WHERE status >= 400 OR status = 0),
                  count(*)
           FROM sitekb.pages WHERE site = %s AND last_run_id = %s""",
        (run.site.name, run.run_id),
    ).fetchone()
    docs = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'quarantined') FROM sitekb.documents WHERE run_id = %s",
        (run.run_id,),
    ).fetchone()
    return {"pages_ok": row[0], "errors": row[1], "pages_seen": row[2], "extracted": docs[0], "quarantined": docs[1]}


def diff_snapshots(conn: psycopg.Connection, old: snapshots.Snapshot | None, new: snapshots.Snapshot) -> dict:
    """Pages added/removed/changed and chunk churn between two built snapshots (see snapshots.diff)."""
    return snapshots.diff(conn, old if old is not None and old.table_name else None, new).summary()


def golden_score(conn: psycopg.Connection, site: SiteConfig, snap: snapshots.Snapshot) -> dict:
    """How many golden questions find their expected URL in the top-k of ``snap``."""
    from sitekb.search import search_snapshot

    hits, lost = 0, []
    for golden in site.golden_questions:
        expected = site.absolute(golden.expected_url)
        passages = search_snapshot(conn, snap, golden.question, k=site.golden_k, mode=site.golden_mode)
        if any(p.url == expected for p in passages):
            hits += 1
        else:
            lost.append(golden.question)
    return {"asked": len(site.golden_questions), "hits": hits, "missed": lost, "k": site.golden_k,
            "questions_hash": _golden_hash(site)}


def _golden_hash(site: SiteConfig) -> str:
    import hashlib

    payload = json.dumps([g.model_dump() for g in site.golden_questions] + [site.golden_k, site.golden_mode],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def live_golden_score(conn: psycopg.Connection, site: SiteConfig, live: snapshots.Snapshot) -> dict:
    """The live snapshot's golden score: stored at its own evaluation when the questions are the same."""
    stored = (live.quality or {}).get("golden") or {}
    if stored.get("questions_hash") == _golden_hash(site):
        return stored
    return golden_score(conn, site, live)


def evaluate_stage(conn: psycopg.Connection, run: Run) -> dict:
    """Batch gate and golden questions against the live snapshot; rejects on failure."""
    with stage(conn, run.run_id, "evaluate") as out:
        snap = snapshots.for_run(conn, run.run_id)
        if snap is None or snap.table_name is None:
            raise SitekbError(f"run {run.run_id} has no built snapshot; run the build task first")
        try:
            live = snapshots.resolve(conn, run.site.name, run.params.get("alias", snapshots.DEFAULT_ALIAS))
        except SitekbError:
            live = None
        totals = {**_run_totals(conn, run), **snap.counts}
        # The batch suite (sitekb.expectations.suites.batch_checks), validated with Great Expectations.
        from sitekb import gate

        docs_dir = gate.data_docs_dir(run.site, run.run_id)
        failures, batch = gate.judge_batch(totals, live.counts if live else None, run.site, run.run_id, docs_dir)
        golden = golden_score(conn, run.site, snap) if run.site.golden_questions else None
        live_golden = live_golden_score(conn, run.site, live) if (golden and live) else None
        if golden and live_golden and golden["hits"] < live_golden["hits"] - run.site.golden_tolerance:
            lost = sorted(set(golden["missed"]) - set(live_golden["missed"]))
            failures.append(quality.Failure(
                "golden_questions", golden["hits"], live_golden["hits"] - run.site.golden_tolerance,
                f"answers {golden['hits']}/{golden['asked']} golden questions, live answers "
                f"{live_golden['hits']}; lost: {lost}",
            ))
        diff = diff_snapshots(conn, live, snap)
        quality_summary = {"totals": totals, "golden": golden, "live_golden": live_golden,
                           "failures": [f.as_dict() for f in failures], "batch": batch,
                           "documents": gate.document_summary(conn, run.run_id),
                           "data_docs": str(docs_dir / "index.html") if docs_dir else None}
        summary_diff = {k: (len(v) if isinstance(v, list) else v) for k, v in diff.items()}
        out.update(snapshot_id=snap.snapshot_id, failures=[f.message for f in failures], golden=golden,
                   diff=summary_diff)
        if failures:
            snapshots.set_state(conn, snap.snapshot_id, "rejected", reasons=quality_summary["failures"],
                                quality=quality_summary, diff=diff, counts=totals)
            with conn.transaction():
                conn.execute(
                    "UPDATE sitekb.runs SET status = 'blocked', error = %s, finished_at = now() WHERE run_id = %s",
                    ("; ".join(f.message for f in failures), run.run_id),
                )
            out["rejected"] = True
    if failures:
        raise QualityGateFailed(
            f"snapshot {snap.snapshot_id} of {run.site.name!r} was rejected and not published: "
            + "; ".join(f"{f.check}: {f.message}" for f in failures)
            + ". The live snapshot is unchanged. `sitekb snapshots list` shows it; fix the site or the "
            "thresholds in the site config's `quality` section and run again."
        )
    snapshots.set_state(conn, snap.snapshot_id, "validated", quality=quality_summary, diff=diff, counts=totals)
    return out


def publish_stage(conn: psycopg.Connection, run: Run, alias: str | None = None) -> dict:
    alias = alias or run.params.get("alias") or snapshots.DEFAULT_ALIAS
    with stage(conn, run.run_id, "publish") as out:
        snap = snapshots.for_run(conn, run.run_id)
        if snap is None or snap.state not in ("validated", "published"):
            state = snap.state if snap else "missing"
            raise SitekbError(f"the snapshot of run {run.run_id} is {state}; only a validated snapshot is published")
        previous = snapshots.publish(conn, snap.snapshot_id, alias, actor=run.params.get("actor"),
                                     reason=f"run {run.run_id}")
        dropped = snapshots.apply_retention(conn, run.site.name, run.site.keep_snapshots)
        with conn.transaction():
            conn.execute(
                "UPDATE sitekb.runs SET status = 'succeeded', finished_at = now() WHERE run_id = %s", (run.run_id,)
            )
            # Staging rows of older runs are no longer needed once a snapshot holds them.
            conn.execute(
                """DELETE FROM sitekb.chunks WHERE site = %s AND run_id IN (
                       SELECT run_id FROM sitekb.runs WHERE site = %s AND run_id <> %s
                         AND finished_at IS NOT NULL)""",
                (run.site.name, run.site.name, run.run_id),
            )
            # Each run stores the site's extracted text again. The documents (and quarantine
            # verdicts) of the newest keep_snapshots runs stay for inspection, and so do those
            # of every run whose snapshot retention kept (live, rollback target, pinned);
            # older ones go, so the database does not grow by a copy of the site every run.
            documents_dropped = conn.execute(
                """DELETE FROM sitekb.documents WHERE site = %s AND run_id IN (
                       SELECT run_id FROM sitekb.runs WHERE site = %s AND run_id <> %s
                         AND finished_at IS NOT NULL
                       ORDER BY started_at DESC, run_id DESC OFFSET %s)
                     AND run_id NOT IN (SELECT run_id FROM sitekb.snapshots
                                        WHERE site = %s AND table_name IS NOT NULL)""",
                (run.site.name, run.site.name, run.run_id, run.site.keep_snapshots - 1, run.site.name),
            ).rowcount
        out.update(snapshot_id=snap.snapshot_id, alias=alias, previous=previous, retired=dropped,
                   old_documents_dropped=documents_dropped)
    return out


def fail_run(conn: psycopg.Connection, run_id: str, error: BaseException) -> None:
    """Mark a run failed (unless the gate already marked it blocked)."""
    with conn.transaction():
        conn.execute(
            """UPDATE sitekb.runs SET status = 'failed', error = %s, finished_at = now()
               WHERE run_id = %s AND status = 'running'""",
            (str(error)[:4000], run_id),
        )


def run_refresh(site: str | SiteConfig, *, settings: Settings | None = None, run_id: str | None = None,
                alias: str = snapshots.DEFAULT_ALIAS, full_recrawl: bool = False, start_url: str | None = None,
                overrides: dict | None = None, log: Callable[[str], None] = print) -> str:
    """Run every stage in-process; return the run id. Raises a SitekbError on failure."""
    settings = settings or Settings.from_env()
    config = resolve_site(site, settings, overrides, start_url)
    database_url = db.database_url(settings)
    run_id = run_id or new_run_id()
    with db.connection(database_url) as conn:
        db.migrate(conn)
        run = start_run(conn, config, run_id, {"alias": alias, "full_recrawl": full_recrawl})
        try:
            # Importing torch and loading a local model takes seconds: do it while the crawl runs.
            prewarm = getattr(embedding_plan(run, settings), "prewarm", None)
            if prewarm is not None:
                prewarm()
            for name, call in (
                ("crawl", lambda: crawl_stage(conn, run, database_url)),
                ("extract", lambda: extract_stage(conn, run)),
                ("validate", lambda: validate_stage(conn, run)),
                ("chunk", lambda: chunk_stage(conn, run, settings)),
                ("embed", lambda: embed_stage(conn, run, settings, log=log)),
                ("build", lambda: build_stage(conn, run, settings)),
                ("evaluate", lambda: evaluate_stage(conn, run)),
                ("publish", lambda: publish_stage(conn, run, alias)),
            ):
                log(f"[{name}] ...")
                call()
        except BaseException as exc:
            fail_run(conn, run_id, exc)
            raise
    return run_id


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
