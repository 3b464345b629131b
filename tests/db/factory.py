"""Snapshots made without a crawl: staged rows fed through the real ``snapshot_tables.build``.

``make_snapshot`` writes documents, chunks and cached vectors for a fake run
exactly where the pipeline's stages would, then creates and builds the
snapshot with the production code. Vectors are random unit vectors of a small
dimension unless given (fast), or real embeddings when ``embed=True``.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np
from pgvector import Vector

from sitekb.store import fulltext, snapshot_tables, snapshots

_RUNS = itertools.count(1)
SYNTHETIC_MODEL = "synthetic"


@dataclass
class Page:
    url: str
    title: str
    chunks: list[str]
    headings: list[str] = field(default_factory=lambda: ["Intro"])
    tags: list[str] = field(default_factory=list)
    language: str = "en"
    published: str | None = "2024-05-01"


def random_pages(site: str, pages: int = 4, chunks_per_page: int = 3, seed: int = 0) -> list[Page]:
    rng = np.random.default_rng(seed)
    words = ["lead", "score", "email", "budget", "webinar", "routing", "consent", "churn", "pricing", "form"]
    out = []
    for p in range(pages):
        texts = [" ".join(rng.choice(words, 12)) + f" page{p} part{c} seed{seed}" for c in range(chunks_per_page)]
        out.append(Page(f"https://{site}.example/p{p}.html", f"Page {p}", texts))
    return out


def make_snapshot(conn, site: str, pages: list[Page], *, dims: int = 8, state: str = "validated",
                  vectors: dict[str, np.ndarray] | None = None, embed: bool = False, seed: int = 0,
                  publish_as: str | None = None, fulltext_stage: bool = True) -> snapshots.Snapshot:
    """Stage ``pages`` as one run, build its snapshot, set ``state`` (and publish to an alias).

    ``fulltext_stage=False`` skips caching the full-text vectors as the chunk
    stage does, so the build computes them itself.
    """
    run_id = f"factory__{site}__{next(_RUNS)}__{seed}"
    provider, model = ("local", "all-MiniLM-L6-v2") if embed else ("local", SYNTHETIC_MODEL)
    if embed:
        dims = 384
    texts = [text for page in pages for text in page.chunks]
    if embed:
        from sitekb.embedding import get_embedder

        matrix = get_embedder("local", model).embed(texts)
        vectors = dict(zip(texts, matrix))
    elif vectors is None:
        rng = np.random.default_rng(seed)
        matrix = rng.standard_normal((len(texts), dims)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        vectors = dict(zip(texts, matrix))
    with conn.transaction():
        for page in pages:
            conn.execute(
                """INSERT INTO sitekb.documents (run_id, site, url, content_hash, title, published, language,
                                                 index_language, tags, markdown, word_count)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (run_id, site, page.url, _hash(" ".join(page.chunks)).hex(), page.title, page.published,
                 page.language, page.language, page.tags, "\n\n".join(page.chunks),
                 sum(len(t.split()) for t in page.chunks)),
            )
            for seq, text in enumerate(page.chunks):
                digest = _hash(text)
                conn.execute(
                    """INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                                                  text_hash, token_count)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    (run_id, _hash(page.url + text).hex()[:24], site, page.url, seq, page.headings, text, text,
                     digest, len(text.split())),
                )
                conn.execute(
                    """INSERT INTO sitekb.embedding_cache (model, dimensions, text_hash, embedding)
                       VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    (model, dims, digest, Vector(np.asarray(vectors[text], dtype=np.float32))),
                )
        snapshot_id = snapshots.create_record(
            conn, site=site, run_id=run_id, provider=provider, model=model, dimensions=dims,
            tokenizer="test", config_hash="test", extractor_version="test", chunker_version="test",
        )
    if fulltext_stage:
        fulltext.index_run(conn, run_id)
    snapshot_tables.build(conn, snapshot_id, run_id, model, dims)
    if state != "building":
        snapshots.set_state(conn, snapshot_id, "validated" if publish_as else state)
    if publish_as:
        snapshots.publish(conn, snapshot_id, publish_as, actor="test", reason="factory")
    return snapshots.get(conn, snapshot_id)


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


READER_PASSWORD = "sitekb-test-reader"


def reader_connection(admin_conn, url: str):
    """A connection as the read-only role, the way a frontend logs in (the password is set for the test)."""
    import psycopg
    from pgvector.psycopg import register_vector

    admin_conn.execute(f"ALTER ROLE sitekb_reader PASSWORD '{READER_PASSWORD}'")
    conn = psycopg.connect(url, user="sitekb_reader", password=READER_PASSWORD, autocommit=True)
    register_vector(conn)
    assert conn.execute("SELECT current_user").fetchone()[0] == "sitekb_reader"
    return conn


TOPICS = [
    Page("https://kb.example/lead-scoring.html", "Lead scoring", [
        "A demo request adds 30 points to a lead score; a pricing page visit adds 10 points.",
        "Leads above 60 points are passed to sales as marketing qualified leads."],
        headings=["Lead scoring", "Points"], tags=["sales"]),
    Page("https://kb.example/email.html", "Email deliverability", [
        "Bulk senders must keep the spam complaint rate under 0.3 percent for Gmail.",
        "Authenticate mail with SPF, DKIM and DMARC before sending campaigns."],
        headings=["Email", "Deliverability"], tags=["email"]),
    Page("https://kb.example/webinars.html", "Webinar runbook", [
        "Hold the technical rehearsal with speakers two days before the webinar.",
        "Send the recording to registrants within 24 hours of the event."],
        headings=["Events", "Webinars"], tags=["events"], published="2023-11-02"),
    Page("https://kb.example/ab-tests.html", "A/B testing pitfalls", [
        "Let an A/B test run for at least two full weeks to cover weekly cycles.",
        "Do not stop a test early just because it looks significant."],
        headings=["Experiments"], tags=["growth"]),
    Page("https://kb.example/forms.html", "Form spam", [
        "A form filled in under three seconds is treated as a bot submission.",
        "Hidden honeypot fields catch simple spam bots."],
        headings=["Forms", "Spam"], tags=["web"], language="en-US"),
    Page("https://kb.example/budget.html", "Budget planning", [
        "Plan the marketing budget per quarter and keep ten percent in reserve.",
        "Review paid media spend monthly against pipeline created."],
        headings=["Planning"], tags=["finance"]),
]


class running_server:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and a free port, in a thread, for the length of a with-block."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = None

    def __enter__(self) -> str:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the API server did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
