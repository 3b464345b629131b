"""The HTTP API under load while snapshots are published and rolled back (issue 16, `make bench`).

A bounded loopback load of ``POST /v1/search``, measured side by side in one
run on one database, phase after phase:

- idle: the API alone (the baseline);
- publish: meanwhile a new snapshot of the site is staged, built (load, HNSW +
  GIN + btree indexes), published and retention applied (keep 2), in a loop,
  as the pipeline's build and publish stages do; a small share of the chunks
  changes each time, so each build reuses cached embeddings and full-text
  vectors like a real refresh;
- rollback: meanwhile the alias is moved back and forth between the two newest
  snapshots (``snapshots.rollback``) every ROLLBACK_PAUSE seconds;
- idle_after: the API alone again, so the drift of a shared machine over the
  run shows;
- compaction: sitekb has no compaction step yet; the phase is recorded as not
  applicable, nothing is measured.

The API is the real ``sitekb serve`` in its own process (one uvicorn worker,
its default connection pool) on 127.0.0.1, connected as the read-only
``sitekb_reader`` role through ``SITEKB_API_DATABASE_URL``. The snapshot is
embedded by ``tests/fake_openai.py`` (its own process, no internet), which the
API also asks to embed every vector and hybrid question, as it would ask the
OpenAI API. CLIENTS threads, each with its own keep-alive ``httpx`` client,
send questions in turn as vector, keyword and hybrid searches, each question
asked once (so the API's cache of recent question vectors never helps);
latency is measured by the client, end to end. The clients send their next
request as soon as the last is answered: the API is saturated, and latency
includes waiting for it (p50 is about CLIENTS / throughput).

Per phase: requests, errors (by status, and exceptions by type), p50/p95/p99.
The benchmark asserts there are no errors and that every answer came from a
snapshot that was published (a correctness claim); it asserts no timing.

Settings: SITEKB_BENCH_LOAD_CHUNKS (default 5,000 chunks of 384 dimensions),
SITEKB_BENCH_LOAD_SECONDS (per phase, default 20), SITEKB_BENCH_LOAD_CLIENTS
(default 8).
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from psycopg.conninfo import make_conninfo

from sitekb import store
from sitekb.embedding import text_hash
from sitekb.store import fulltext, snapshot_tables, snapshots
from sitekb.store.embeddings import store_vectors
from tests.benchmarks.results import write_result
from tests.conftest import REPO, _reset_schema
from tests.db.factory import READER_PASSWORD
from tests.fake_openai import fake_vector

N = int(os.environ.get("SITEKB_BENCH_LOAD_CHUNKS", "5000"))
SECONDS = float(os.environ.get("SITEKB_BENCH_LOAD_SECONDS", "20"))
CLIENTS = int(os.environ.get("SITEKB_BENCH_LOAD_CLIENTS", "8"))
WARMUP_SECONDS = 5.0
DIMS = 384
MODEL = "text-embedding-3-small"      # the fake server honours `dimensions`, as OpenAI does
SITE = "loadbench"
KEEP = 2                              # retention during the publish phase: old tables are dropped under load
CHANGED_SHARE = 0.05                  # chunks whose text changes from one published snapshot to the next
ROLLBACK_PAUSE = 0.1
CHUNKS_PER_PAGE = 20
WORDS_PER_CHUNK = 60
K = 5
MODES = ("vector", "keyword", "hybrid")
REQUEST_TIMEOUT = 30.0
QUESTIONS = 30_000        # distinct; more than a run asks (about 15,000)
CONTENT = REPO / "plugins" / "sitekb" / "demo" / "content" / "articles"


# -- the corpus -------------------------------------------------------------

class Corpus:
    """Chunk texts of the site's current version, and the fake server's vector of every text seen."""

    def __init__(self, n: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.words = np.array(sorted({w.strip(".,;:()\"'!?").lower() for f in CONTENT.glob("*.txt")
                                      for w in f.read_text().split()} - {""}))
        self.texts = [self._text() for _ in range(n)]
        self.vectors: dict[str, np.ndarray] = {}

    def _text(self) -> str:
        return " ".join(self.words[self.rng.integers(0, len(self.words), WORDS_PER_CHUNK)])

    def next_version(self) -> None:
        """Edit CHANGED_SHARE of the chunks, as a refresh of a site where a few pages changed."""
        for i in self.rng.choice(len(self.texts), int(len(self.texts) * CHANGED_SHARE), replace=False):
            self.texts[i] = self._text()

    def vector(self, text: str) -> np.ndarray:
        if text not in self.vectors:
            self.vectors[text] = fake_vector(text, DIMS, MODEL)
        return self.vectors[text]

    def questions(self, count: int) -> list[str]:
        """``count`` different questions: three consecutive words of a chunk (a keyword search finds it)."""
        out: dict[str, None] = {}
        while len(out) < count:
            words = self.texts[int(self.rng.integers(0, len(self.texts)))].split()
            start = int(self.rng.integers(0, len(words) - 3))
            out[" ".join(words[start:start + 3])] = None
        return list(out)


def _stage(conn, run_id: str, corpus: Corpus) -> None:
    """Documents, chunks and cached vectors of one run, where the extract, chunk and embed stages write them."""
    texts = corpus.texts
    with conn.transaction():
        with conn.cursor().copy(
            "COPY sitekb.documents (run_id, site, url, content_hash, title, published, language, tags, markdown, "
            "word_count) FROM STDIN"
        ) as copy:
            for start in range(0, len(texts), CHUNKS_PER_PAGE):
                page = start // CHUNKS_PER_PAGE
                body = "\n\n".join(texts[start:start + CHUNKS_PER_PAGE])
                copy.write_row((run_id, SITE, f"https://{SITE}.example/p{page}.html", text_hash(body).hex(),
                                f"Page {page}", "2024-01-01", "en", ["bench"], body, len(body.split())))
        with conn.cursor().copy(
            """COPY sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text, text_hash,
                                   token_count) FROM STDIN WITH (FORMAT BINARY)"""
        ) as copy:
            copy.set_types(["text", "text", "text", "text", "int4", "text[]", "text", "text", "bytea", "int4"])
            for i, text in enumerate(texts):
                page, seq = divmod(i, CHUNKS_PER_PAGE)
                copy.write_row((run_id, text_hash(f"{page}/{text}").hex()[:24], SITE,
                                f"https://{SITE}.example/p{page}.html", seq, ["Guide", f"Section {seq}"], text, text,
                                text_hash(text), WORDS_PER_CHUNK))
    new = [t for t in dict.fromkeys(texts) if t not in corpus.vectors]
    for start in range(0, len(new), 2048):   # one committed batch per embedding request, as embed_run does
        batch = new[start:start + 2048]
        store_vectors(conn, MODEL, DIMS, [text_hash(t) for t in batch], np.stack([corpus.vector(t) for t in batch]))


def _build(conn, corpus: Corpus, version: int, embedding_url: str) -> tuple[int, dict]:
    """Stage, index the full text of, and build one validated snapshot; return its id and timings."""
    run_id = f"loadbench__{version}"
    started = time.perf_counter()
    _stage(conn, run_id, corpus)
    staged = time.perf_counter()
    fulltext.index_run(conn, run_id)
    with conn.transaction():
        snapshot_id = snapshots.create_record(
            conn, site=SITE, run_id=run_id, provider="openai", model=MODEL, dimensions=DIMS, tokenizer="cl100k_base",
            config_hash="bench", extractor_version="bench", chunker_version="bench", base_url=embedding_url)
    built = snapshot_tables.build(conn, snapshot_id, run_id, MODEL, DIMS)
    snapshots.set_state(conn, snapshot_id, "validated")
    return snapshot_id, {"stage_seconds": staged - started, "build_seconds": time.perf_counter() - staged,
                         "chunks": built["chunks"]}


# -- processes --------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(probe, proc: subprocess.Popen, log: Path, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if probe():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not answer within {seconds} s: {log.read_text()[-2000:]}")


class Process:
    """A child process whose output goes to a file, ended (by its own pid) when the with-block ends."""

    def __init__(self, argv: list[str], env: dict, log: Path):
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT)

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._out.close()


# -- the load ---------------------------------------------------------------

class Load:
    """CLIENTS threads sending searches until told to stop; every answer is recorded."""

    def __init__(self, base: str, questions: list[str], published: set[int]):
        self.base, self.questions, self.published = base, questions, published
        self.records: list[tuple[str, str, float]] = []   # (mode, outcome: "200", "503", "ReadTimeout"..., ms)
        self.anomalies: list[str] = []                    # 200s that are wrong: a foreign snapshot, a short answer
        self.samples: dict[str, str] = {}                 # the first body of each failing outcome
        self.served_by: collections.Counter = collections.Counter()
        self.keyword_empty = 0
        self._lock = threading.Lock()
        self._next = itertools.count()    # one sequence for all clients: no question is asked twice
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "Load":
        self._stop.clear()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)

    def take(self) -> tuple[list, list, dict, collections.Counter, int]:
        """What was recorded since the last take (the load keeps running)."""
        with self._lock:
            taken = (self.records, self.anomalies, self.samples, self.served_by, self.keyword_empty)
            self.records, self.anomalies, self.samples = [], [], {}
            self.served_by, self.keyword_empty = collections.Counter(), 0
        return taken

    def _client(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT) as client:
            while not self._stop.is_set():
                i = next(self._next)
                mode = MODES[i % len(MODES)]
                body = {"query": self.questions[i % len(self.questions)], "site": SITE, "k": K, "mode": mode}
                started = time.perf_counter()
                try:
                    response = client.post("/v1/search", json=body)
                    ms = (time.perf_counter() - started) * 1000
                    outcome, text = str(response.status_code), response.text
                except httpx.HTTPError as exc:
                    ms = (time.perf_counter() - started) * 1000
                    outcome, text, response = type(exc).__name__, str(exc), None
                answer = response.json() if outcome == "200" else None
                with self._lock:
                    self.records.append((mode, outcome, ms))
                    if answer is None:
                        self.samples.setdefault(outcome, text[:300])
                        continue
                    self.served_by[answer["snapshot_id"]] += 1
                    if answer["snapshot_id"] not in self.published:
                        self.anomalies.append(f"answered from snapshot {answer['snapshot_id']}, never published")
                    elif mode == "vector" and len(answer["results"]) != K:
                        self.anomalies.append(f"vector search gave {len(answer['results'])} of {K} passages")
                    elif mode == "keyword" and not answer["results"]:
                        self.keyword_empty += 1


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(load: Load, name: str, seconds: float, background=None, processes: dict | None = None) -> dict:
    """Run the load for ``seconds`` (and the background work, until its current step ends); summarise it.

    ``processes`` (name: pid): their CPU use over the phase is recorded, in cores (1.0 = one core busy).
    """
    processes = {**(processes or {}), "benchmark (clients, publisher)": os.getpid()}
    load.take()
    cpu = {name: _cpu_seconds(pid) for name, pid in processes.items()}
    started = time.perf_counter()
    work = background(started + seconds) if background else None
    if work is None:
        time.sleep(max(0.0, started + seconds - time.perf_counter()))
    elapsed = time.perf_counter() - started
    cores = {name: round((_cpu_seconds(pid) - cpu[name]) / elapsed, 2) for name, pid in processes.items()}
    records, anomalies, samples, served_by, keyword_empty = load.take()
    ms = [r[2] for r in records]
    outcomes = collections.Counter(r[1] for r in records)
    errors = {k: v for k, v in outcomes.items() if k != "200"}
    phase = {
        "seconds": round(elapsed, 1), "requests": len(records), "errors": sum(errors.values()),
        "errors_by_outcome": errors, "error_samples": samples, "requests_per_s": round(len(records) / elapsed, 1),
        "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95), "p99_ms": _pct(ms, 99),
        "max_ms": round(max(ms), 1) if ms else None,
        "by_mode": {mode: {"requests": len(got), "p50_ms": _pct(got, 50), "p95_ms": _pct(got, 95),
                           "p99_ms": _pct(got, 99)}
                    for mode in MODES for got in [[r[2] for r in records if r[0] == mode]]},
        "anomalies": len(anomalies), "anomaly_samples": anomalies[:5],
        "answers_by_snapshot": dict(sorted(served_by.items())), "keyword_answers_empty": keyword_empty,
        "cpu_cores_used": cores, "load_average_1min": round(os.getloadavg()[0], 2),   # the machine is shared
    }
    if work is not None:
        phase["background"] = work
    print(f"  {name}: {phase['requests']} requests, {phase['errors']} errors, p50/p95/p99 "
          f"{phase['p50_ms']}/{phase['p95_ms']}/{phase['p99_ms']} ms", flush=True)
    return phase


def _source() -> dict:
    """The commit measured and the files of the package changed since (several people share this checkout)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD").strip(),
            "modified": [line[3:] for line in git("status", "--porcelain", "--", "plugins").splitlines()]}


@pytest.mark.timeout(1200)
def test_bench_load(database_server, tmp_path):
    t0 = time.perf_counter()
    _reset_schema(database_server)
    conn = store.connect(database_server)
    store.migrate(conn)
    conn.execute(f"ALTER ROLE sitekb_reader PASSWORD '{READER_PASSWORD}'")
    reader_url = make_conninfo(database_server, user="sitekb_reader", password=READER_PASSWORD)
    corpus = Corpus(N)
    # More questions than the run asks: each is asked once, so the API's cache of recent question
    # vectors never answers and every vector or hybrid search is embedded (the costly case).
    questions = corpus.questions(QUESTIONS)

    fake_port, api_port = _free_port(), _free_port()
    embedding_url = f"http://127.0.0.1:{fake_port}/v1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SITEKB_", "OPENAI_"))}
    env.update(SITEKB_DATABASE_URL=database_server, SITEKB_API_DATABASE_URL=reader_url,
               SITEKB_HOME=str(tmp_path / "home"), OPENAI_API_KEY="sk-load-bench")
    base = f"http://127.0.0.1:{api_port}"
    fake = Process([sys.executable, "-m", "tests.fake_openai", "--port", str(fake_port)], env,
                   tmp_path / "fake_openai.log")
    server = Process([sys.executable, "-m", "sitekb.cli", "serve", "--host", "127.0.0.1", "--port", str(api_port),
                      "--log-level", "warning"], env, tmp_path / "serve.log")
    with fake, server:
        versions = iter(range(1, 10_000))
        first, timings = _build(conn, corpus, next(versions), embedding_url)
        assert timings["chunks"] == N
        published = {first}
        snapshots.publish(conn, first, actor="bench", reason="load bench")
        print(f"  [{time.perf_counter() - t0:6.1f} s] snapshot {first}: {N} chunks x {DIMS} dims, "
              f"built in {timings['build_seconds']:.1f} s", flush=True)
        _wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, server.proc, server.log,
                    "sitekb serve")
        _wait_until(lambda: httpx.post(f"{embedding_url}/embeddings", json={"model": MODEL, "input": "x"},
                                       timeout=5).status_code == 200, fake.proc, fake.log, "the fake OpenAI server")

        def publishing(until: float) -> dict:
            steps, dropped = [], []
            while time.perf_counter() < until:
                corpus.next_version()
                snapshot_id, step = _build(conn, corpus, next(versions), embedding_url)
                published.add(snapshot_id)     # before the move: an answer from it may come back at once
                moved = time.perf_counter()
                snapshots.publish(conn, snapshot_id, actor="bench", reason="load bench")
                step["publish_ms"] = (time.perf_counter() - moved) * 1000
                retained = time.perf_counter()
                dropped += snapshots.apply_retention(conn, SITE, KEEP)
                step["retention_ms"] = (time.perf_counter() - retained) * 1000
                steps.append(step)
            return {"published": len(steps), "tables_dropped_by_retention": len(dropped),
                    "stage_seconds_median": round(statistics.median(s["stage_seconds"] for s in steps), 2),
                    "build_seconds_median": round(statistics.median(s["build_seconds"] for s in steps), 2),
                    "publish_ms_median": round(statistics.median(s["publish_ms"] for s in steps), 2),
                    "retention_ms_median": round(statistics.median(s["retention_ms"] for s in steps), 2)}

        def rolling_back(until: float) -> dict:
            moves = []
            while time.perf_counter() < until:
                started = time.perf_counter()
                snapshots.rollback(conn, SITE, actor="bench", reason="load bench")
                moves.append((time.perf_counter() - started) * 1000)
                time.sleep(ROLLBACK_PAUSE)
            return {"alias_moves": len(moves), "move_ms_median": round(statistics.median(moves), 2),
                    "move_ms_max": round(max(moves), 2), "pause_s": ROLLBACK_PAUSE}

        load = Load(base, questions, published).start()
        try:
            time.sleep(WARMUP_SECONDS)   # the server's first requests open connections and the embedder's client
            # The server reads as the reader role: its pooled sessions are there (this process has one, as owner).
            sessions = dict(conn.execute(
                "SELECT usename, count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY usename").fetchall())
            pids = {"sitekb serve": server.proc.pid, "fake OpenAI": fake.proc.pid}
            phases = {"idle": _measure(load, "idle", SECONDS, processes=pids)}
            phases["publish"] = _measure(load, "publish", SECONDS, publishing, pids)
            rollback_pair = set(snapshots.list_snapshots(conn, SITE, limit=2)[i]["snapshot_id"] for i in (0, 1))
            phases["rollback"] = _measure(load, "rollback", SECONDS, rolling_back, pids)
            # The baseline again: on a shared machine, drift between the first and the last phase shows here.
            phases["idle_after"] = _measure(load, "idle_after", SECONDS, processes=pids)
        finally:
            load.stop()
        phases["compaction"] = {"applicable": False,
                                "reason": "sitekb has no compaction step yet; nothing is measured"}
    server_log = (tmp_path / "serve.log").read_text()
    conn.close()

    data = {
        "chunks": N, "dimensions": DIMS, "clients": CLIENTS, "seconds_per_phase": SECONDS, "k": K,
        "modes": "vector, keyword and hybrid in turn", "questions": "each asked once", "keep_snapshots": KEEP,
        "changed_share": CHANGED_SHARE,
        "server": "sitekb serve (one uvicorn worker, default pool) as sitekb_reader via SITEKB_API_DATABASE_URL",
        "embedding": "tests/fake_openai.py in its own process; vector and hybrid questions are embedded there",
        "database_sessions_under_load": sessions, "source": _source(),
        "phases": phases, "server_log_tail": server_log[-2000:],
    }
    lines = [f"{N} chunks x {DIMS} dims, {CLIENTS} clients on 127.0.0.1, {SECONDS:g} s per phase, POST /v1/search "
             f"vector/keyword/hybrid in turn (k={K}), sitekb serve as sitekb_reader"]
    header = f"{'phase':<11}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    table = [header]
    for name, p in phases.items():
        if not p.get("applicable", True):
            lines.append(f"{name}: not applicable ({p['reason']})")
            table.append(f"{name:<11}{'n/a':>9}")
            continue
        extra = ""
        if name == "publish":
            b = p["background"]
            extra = (f"; meanwhile {b['published']} snapshots built (median {b['build_seconds_median']} s) and "
                     f"published, retention dropped {b['tables_dropped_by_retention']} tables")
        elif name == "rollback":
            b = p["background"]
            extra = f"; meanwhile {b['alias_moves']} alias moves (median {b['move_ms_median']} ms)"
        errors = ", ".join(f"{k}: {v}" for k, v in p["errors_by_outcome"].items()) or "none"
        lines.append(f"{name}: {p['requests']} requests ({p['requests_per_s']}/s), errors {errors}, p50/p95/p99 "
                     f"{p['p50_ms']}/{p['p95_ms']}/{p['p99_ms']} ms{extra}")
        table.append(f"{name:<11}{p['requests']:>9}{p['errors']:>8}{p['requests_per_s']:>8}{p['p50_ms']:>9}"
                     f"{p['p95_ms']:>9}{p['p99_ms']:>9}")
    write_result("load", data, lines)
    print("\n".join(table))

    assert sessions.get("sitekb_reader", 0) >= 1, sessions
    measured = [p for p in phases.values() if p.get("applicable", True)]
    assert all(p["errors"] == 0 for p in measured), {n: (p["errors_by_outcome"], p["error_samples"])
                                                     for n, p in phases.items() if p.get("errors")}
    assert all(p["anomalies"] == 0 for p in measured), {n: p["anomaly_samples"] for n, p in phases.items()
                                                        if p.get("anomalies")}
    # The phases did what they are named after, and the answers followed the alias.
    assert phases["publish"]["background"]["published"] >= 1 and phases["rollback"]["background"]["alias_moves"] >= 2
    assert set(phases["rollback"]["answers_by_snapshot"]) <= rollback_pair
