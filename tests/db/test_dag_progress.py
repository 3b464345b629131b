"""How far an Airflow run's crawl and embedding have come, counted from sitekb's database by the CLI's poller.

The task runs in another process; what it commits (pages in batches, each request's vectors) is what the
live display of `sitekb run SITE --engine airflow` counts, while the task of that stage runs.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

import numpy as np

from sitekb import engine
from sitekb.orchestration.progress import Count, LogDisplay, Poller, measure
from sitekb.store import embeddings, pages, runs

MODEL, DIMENSIONS = "synthetic-progress", 8
EMBEDDING = {"provider": "local", "model": MODEL, "dimensions": DIMENSIONS, "tokenizer": "test", "max_tokens": 256}


def _line(what: str, task: str, map_index: int = -1) -> str:
    # As `airflow dags test` writes it (Airflow 3.3.2).
    verb = "starting" if what == "start" else "end task"
    return (f"2026-12-02T17:36:21.904249Z [info     ] [DAG TEST] {verb} task_id={task} map_index={map_index} "
            "[airflow.sdk.definitions.dag] loc=dag.py:1501\n")


def _crawl(conn, site: str, run_id: str, urls: list[str]) -> None:
    fetched = [pages.Fetched(url=u, status=200, final_url=None, content_type="text/html", etag=None,
                             last_modified=None, content_hash=hashlib.sha256(u.encode()).hexdigest(),
                             body=f"<p>{u}</p>", headers={}, depth=1, excluded_rule=None, links=[]) for u in urls]
    pages.write_crawl_batch(conn, site, run_id, datetime.now(timezone.utc), fetched=fetched)


def _chunk(conn, site: str, run_id: str, texts: list[str]) -> list[bytes]:
    hashes = [hashlib.sha256(t.encode()).digest() for t in texts]
    with conn.transaction():
        for seq, (text, digest) in enumerate(zip(texts, hashes)):
            conn.execute(
                """INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, text, embed_text, text_hash,
                                              token_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (run_id, f"c{seq}", site, "https://kb.example/a", seq, text, text, digest, 3))
    return hashes


def _embed(conn, hashes: list[bytes]) -> None:
    vectors = np.ones((len(hashes), DIMENSIONS), dtype=np.float32) / np.sqrt(DIMENSIONS)
    embeddings.store_vectors(conn, MODEL, DIMENSIONS, hashes, vectors)


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the poller did not count in time"
        time.sleep(0.02)


def test_measure_counts_the_pages_the_crawl_wrote_and_the_texts_that_have_a_vector(conn, settings, demo_config):
    run_id = "demo__manual__measure"
    engine.start(conn, settings, demo_config, run_id, {}, embedding=EMBEDDING)
    _crawl(conn, "demo", run_id, ["https://kb.example/a", "https://kb.example/b"])
    hashes = _chunk(conn, "demo", run_id, ["one text", "another text", "one text again", "a fourth"])
    _embed(conn, hashes[:1])
    assert measure(conn, "demo", run_id, "crawl", EMBEDDING) == Count("crawl", 2, None, "pages seen")
    assert measure(conn, "demo", run_id, "embed", EMBEDDING) == Count("embed", 1, 4, "texts")
    assert measure(conn, "demo", run_id, "embed", {}) is None   # a run that recorded no embedder
    assert measure(conn, "demo", run_id, "build", EMBEDDING) is None


def test_the_poller_finds_the_dag_run_s_run_and_counts_while_its_task_runs(conn, settings, database_url,
                                                                            demo_config):
    before = runs.database_now(conn)
    display = LogDisplay("sitekb_demo")
    with Poller(display, database_url, "demo", before, interval=0.05):
        display.feed(_line("start", "start"))
        time.sleep(0.2)
        assert display.state.counts == {}   # no crawl or embed task yet, and no run
        engine.start(conn, settings, demo_config, "demo__manual__poller", {}, embedding=EMBEDDING)
        display.feed(_line("end", "start"))
        display.feed(_line("start", "crawl"))
        _crawl(conn, "demo", "demo__manual__poller", [f"https://kb.example/{i}" for i in range(3)])
        _until(lambda: display.state.counts.get("crawl") == Count("crawl", 3, None, "pages seen"))
        display.feed(_line("end", "crawl"))
        hashes = _chunk(conn, "demo", "demo__manual__poller", ["x one", "x two", "x three", "x four"])
        display.feed(_line("start", "embed_shard", 0))
        _embed(conn, hashes[:2])
        _until(lambda: display.state.counts.get("embed") == Count("embed", 2, 4, "texts"))
        _embed(conn, hashes[2:])
        _until(lambda: display.state.counts.get("embed") == Count("embed", 4, 4, "texts"))
        display.feed(_line("end", "embed_shard", 0))
    assert display.state.tasks[("crawl", -1)].note == "3 pages seen"
    assert display.state.tasks[("embed_shard", 0)].note == "4/4 texts"


def test_a_database_out_of_reach_stops_the_counting_not_the_run():
    display = LogDisplay("sitekb_demo")
    display.feed(_line("start", "crawl"))
    with Poller(display, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", "demo",
                datetime.now(timezone.utc), interval=0.05) as poller:
        poller._thread.join(timeout=10)
    assert not poller._thread.is_alive() and display.state.counts == {}
