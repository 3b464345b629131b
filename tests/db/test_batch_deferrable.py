"""The Batch API as a deferrable Airflow task, against a real Postgres and the fake OpenAI server.

No scheduler or triggerer runs: the tests call what they would call.
``execute()`` must raise ``TaskDeferred`` with a :class:`BatchJobTrigger`; the
trigger's ``run()`` is driven on an event loop against tests/fake_openai.py
(which here wants the site's own key, so a trigger that could not resolve it
would be refused); ``execute_complete()`` gets the trigger's event, as the
worker would when the task resumes.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("airflow.sdk")

from airflow.sdk.exceptions import AirflowFailException, TaskDeferred  # noqa: E402

from sitekb import engine  # noqa: E402
from sitekb.embedding import text_hash  # noqa: E402
from sitekb.errors import TransientError  # noqa: E402
from sitekb.orchestration.batch import BatchEmbedShardOperator  # noqa: E402
from sitekb.orchestration.triggers import BatchJobTrigger  # noqa: E402
from sitekb.providers import openai_batch  # noqa: E402
from sitekb.settings import Settings  # noqa: E402
from sitekb.sites import site_from_dict  # noqa: E402
from sitekb.store.embeddings import Spend, missing_texts, store_vectors  # noqa: E402
from sitekb.tokenization import get_tokenizer  # noqa: E402
from tests.fake_openai import fake_openai, fake_openai_server, fake_vector  # noqa: E402,F401 (fixtures)

MODEL = "text-embedding-3-small"
DIMS = 16
KEY = "sk-batch-secret-4711"      # the site's key: must never be serialized
KEY_ENV = "KB_BATCH_KEY"
PRICE = 1000.0                    # USD per million tokens at the batch price: 0.001 per token, exact in numeric(14, 6)
WORDS = ["lead", "score", "email", "budget", "webinar", "routing", "consent", "churn", "pricing", "form"]


@pytest.fixture
def airflow_env(monkeypatch, tmp_path, fake_openai):
    """The key only in the variable the site names; the fake server wants it on every endpoint."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AIRFLOW_CONN_SITEKB_OPENAI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(fake_openai, "api_key", KEY)
    return monkeypatch


def start_run(conn, server, run_id: str, texts: int = 240, **embedding) -> str:
    """Record a batch-API run and stage ``texts`` distinct chunk texts for it."""
    site = site_from_dict({"name": "bat", "start_urls": ["https://bat.test/"], "embedding": {
        "provider": "openai", "model": MODEL, "dimensions": DIMS, "batch_api": True, "batch_poll_seconds": 0.01,
        "base_url": server.base_url, "api_key_env": KEY_ENV, "prices_usd_per_million": {MODEL: PRICE},
        **embedding}})
    engine.start(conn, Settings.from_env(), site, run_id, {}, gone=engine.declare_gone)  # runs of earlier tests end
    tokenizer = get_tokenizer("openai", MODEL)
    rng = np.random.default_rng(7)
    with conn.transaction(), conn.cursor() as cur:
        for n in range(texts):
            text = " ".join(rng.choice(WORDS, 6 + n % 9)) + f" passage {n}"
            cur.execute(
                """INSERT INTO sitekb.chunks (run_id, chunk_id, site, url, seq, heading_path, text, embed_text,
                                              text_hash, token_count)
                   VALUES (%s, %s, 'bat', %s, 0, %s, %s, %s, %s, %s)""",
                (run_id, f"c{n}", f"https://bat.test/p{n}", ["Intro"], text, text, text_hash(text),
                 tokenizer.count(text)),
            )
    return run_id


def operator(run_id: str, shard=(0, 2)) -> BatchEmbedShardOperator:
    return BatchEmbedShardOperator(task_id="embed_shard", sitekb_run=run_id, shard=list(shard))


def defer(op: BatchEmbedShardOperator) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    assert deferred.value.method_name == "execute_complete"
    assert isinstance(deferred.value.trigger, BatchJobTrigger)
    return deferred.value


def fire(trigger: BatchJobTrigger) -> dict:
    """Run the trigger as the triggerer would, up to its first event; return the payload."""
    async def first():
        events = trigger.run()
        try:
            return await asyncio.wait_for(events.__anext__(), timeout=30)
        finally:
            await events.aclose()

    return asyncio.run(first()).payload


def shard_texts(conn, run_id: str, shard) -> dict[bytes, str]:
    return {h: t for h, t, _ in missing_texts(conn, run_id, MODEL, DIMS, shard=shard)}


def cached(conn) -> dict[bytes, np.ndarray]:
    rows = conn.execute("SELECT text_hash, embedding FROM sitekb.embedding_cache WHERE model = %s AND dimensions = %s",
                        (MODEL, DIMS)).fetchall()
    return {bytes(h): np.asarray(v.to_numpy()) for h, v in rows}


def spend(conn, run_id: str) -> tuple[int, float]:
    return conn.execute("SELECT tokens, usd::float8 FROM sitekb.embedding_spend WHERE run_id = %s",
                        (run_id,)).fetchone()


# -- the trigger --------------------------------------------------------------------

def test_the_trigger_polls_the_job_with_the_key_it_resolves_itself_and_fires_once(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "trig")
    fake_openai.batch_polls = 3
    deferred = defer(operator(run_id))
    trigger = deferred.trigger
    looks = fake_openai.stats.batch_looks
    payload = fire(trigger)
    assert payload["status"] == "done"
    assert [job["status"] for job in payload["jobs"]] == ["completed"]
    assert fake_openai.stats.batch_looks - looks == 4  # in_progress three times, then completed
    # Rebuilt from its serialized kwargs (as in the triggerer), it finds the same job finished.
    classpath, kwargs = trigger.serialize()
    assert classpath == "sitekb.orchestration.triggers.BatchJobTrigger"
    assert fire(BatchJobTrigger(**kwargs))["jobs"] == payload["jobs"]


def test_the_trigger_falls_back_to_the_airflow_connection_for_the_key(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "conn")
    trigger = defer(operator(run_id)).trigger
    airflow_env.delenv(KEY_ENV)
    assert fire(trigger)["status"] == "error"  # no key here: the server refuses, the event says so
    airflow_env.setenv("AIRFLOW_CONN_SITEKB_OPENAI", json.dumps({"conn_type": "generic", "password": KEY}))
    assert fire(trigger)["status"] == "done"


def test_the_serialized_base_url_has_no_credentials_and_the_triggerer_adds_its_own(airflow_env):
    trigger = BatchJobTrigger(["batch_1"], base_url="https://kb:hunter2@llm.internal/v1", api_key_env=KEY_ENV)
    assert "hunter2" not in json.dumps(trigger.serialize())
    assert trigger.serialize()[1]["base_url"] == "https://llm.internal/v1"
    airflow_env.setenv("OPENAI_BASE_URL", "https://kb:hunter2@llm.internal/v1")
    assert asyncio.run(trigger.endpoint()) == (KEY, "https://kb:hunter2@llm.internal/v1")
    airflow_env.setenv("OPENAI_BASE_URL", "https://elsewhere.internal/v1")  # another server: the task's wins
    assert asyncio.run(trigger.endpoint()) == (KEY, "https://llm.internal/v1")


# -- the operator ---------------------------------------------------------------------

def test_execute_defers_to_a_trigger_that_holds_no_key(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "defer")
    deferred = defer(operator(run_id))
    classpath, kwargs = deferred.trigger.serialize()
    dumped = json.dumps([classpath, kwargs, deferred.kwargs, repr(deferred.trigger)])
    assert KEY not in dumped
    assert kwargs["api_key_env"] == KEY_ENV and kwargs["base_url"] == fake_openai.base_url
    assert len(kwargs["batch_ids"]) == 1 and fake_openai.stats.batch_jobs == 1
    assert deferred.timeout is not None and deferred.timeout.total_seconds() >= 24 * 3600
    assert fake_openai.stats.requests == 0  # no synchronous request


def test_execute_complete_stores_exactly_the_shards_vectors_at_the_batch_price(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "store")
    mine, other = shard_texts(conn, run_id, (0, 2)), shard_texts(conn, run_id, (1, 2))
    assert mine and other and not set(mine) & set(other)
    op = operator(run_id)
    payload = fire(defer(op).trigger)
    counts = op.execute_complete(context={}, event=payload)
    vectors = cached(conn)
    assert set(vectors) == set(mine)
    for digest, text in mine.items():
        np.testing.assert_allclose(vectors[digest], fake_vector(text, DIMS, MODEL), rtol=1e-6)
    tokens, usd = spend(conn, run_id)
    assert tokens == sum(get_tokenizer("openai", MODEL).count(t) for t in mine.values())
    assert usd == pytest.approx(tokens * PRICE / 1_000_000)
    assert counts == {"shard": 0, "of": 2, "jobs": 1, "embedded": len(mine), "resent": 0, "requests": 1,
                      "tokens": tokens, "spent_usd": pytest.approx(usd)}
    assert json.dumps(counts)  # XCom: small and plain
    assert fake_openai.stats.requests == 0
    # The shard is complete: running it again sends nothing at all.
    assert operator(run_id).execute(context={})["jobs"] == 0 and fake_openai.stats.batch_jobs == 1


def test_a_retry_after_the_worker_is_lost_submits_no_second_job(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "retry")
    fake_openai.batch_polls = 2
    first = defer(operator(run_id))
    # The worker died after submitting (or while deferred): the next attempt finds the job by its key.
    second = defer(operator(run_id))
    assert second.trigger.batch_ids == first.trigger.batch_ids and fake_openai.stats.batch_jobs == 1
    fire(second.trigger)
    # The trigger fired, but the worker resuming the task was lost: a fresh attempt collects at once.
    counts = operator(run_id).execute(context={})
    assert counts["embedded"] == len(cached(conn)) > 0 and counts["jobs"] == 1
    assert fake_openai.stats.batch_jobs == 1 and fake_openai.stats.requests == 0
    tokens, usd = spend(conn, run_id)
    assert tokens > 0 and usd == pytest.approx(tokens * PRICE / 1_000_000)


def test_a_job_that_failed_validation_fails_the_task_with_the_reason(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "invalid")
    fake_openai.fail_batch_validation = "model 'text-embedding-3-small' is not available for batch"
    op = operator(run_id)
    payload = fire(defer(op).trigger)
    assert payload["status"] == "failed"
    with pytest.raises(AirflowFailException, match="failed validation: model .* not available for batch"):
        op.execute_complete(context={}, event=payload)
    assert cached(conn) == {}


def test_a_malformed_output_is_left_to_airflows_retries(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "malformed")
    fake_openai.malformed_batch_output = True
    op = operator(run_id)
    payload = fire(defer(op).trigger)
    with pytest.raises(TransientError, match="malformed output"):
        op.execute_complete(context={}, event=payload)
    assert cached(conn) == {} and spend(conn, run_id) is None


def test_failed_lines_are_resent_synchronously_at_the_full_price(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "resend", texts=60)
    mine = shard_texts(conn, run_id, (1, 2))
    fake_openai.fail_batch_lines = {0}  # the shard's texts fit one request line: all of it fails
    op = operator(run_id, (1, 2))
    counts = op.execute_complete(context={}, event=fire(defer(op).trigger))
    assert counts["resent"] == counts["embedded"] == len(mine) and set(cached(conn)) == set(mine)
    assert fake_openai.stats.ok_requests == 1
    tokens, usd = spend(conn, run_id)
    assert usd == pytest.approx(tokens * 2 * PRICE / 1_000_000)  # the synchronous price is twice the batch price


def test_texts_cached_meanwhile_are_read_back_from_the_jobs_input_file(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "meanwhile")
    mine = shard_texts(conn, run_id, (0, 2))
    op = operator(run_id)
    deferred = defer(op)
    # While the job runs, another run caches one of its texts: the shard's texts no longer match the job's key.
    digest, text = next(iter(mine.items()))
    store_vectors(conn, MODEL, DIMS, [digest], fake_vector(text, DIMS, MODEL)[None, :],
                  spend=Spend("another-run", "openai", 1, 0.0))
    counts = op.execute_complete(context={}, event=fire(deferred.trigger))
    assert counts["embedded"] == len(mine) and set(cached(conn)) == set(mine)
    assert spend(conn, run_id)[0] == sum(get_tokenizer("openai", MODEL).count(t) for t in mine.values())


def test_the_budget_is_checked_before_submitting_and_before_resending(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "poor", texts=60, budget_usd=0.001)
    with pytest.raises(AirflowFailException, match="BudgetExceeded"):
        operator(run_id).execute(context={})
    assert fake_openai.stats.batch_jobs == 0
    # The same texts (shards depend on the text alone): a budget between the batch and the synchronous price.
    tokens = sum(get_tokenizer("openai", MODEL).count(t) for t in shard_texts(conn, run_id, (0, 2)).values())
    run_id = start_run(conn, fake_openai, "tight", texts=60, budget_usd=1.5 * tokens * PRICE / 1_000_000)
    fake_openai.fail_batch_lines = {0}  # everything must be resent, at twice the batch price: too dear
    op = operator(run_id)
    deferred = defer(op)  # the batch price fits
    with pytest.raises(AirflowFailException, match="synchronous price"):
        op.execute_complete(context={}, event=fire(deferred.trigger))
    assert fake_openai.stats.requests == 0 and cached(conn) == {}


def test_a_shard_larger_than_a_job_becomes_several_jobs(conn, fake_openai, airflow_env):
    airflow_env.setattr(openai_batch, "JOB_INPUTS", 25)
    run_id = start_run(conn, fake_openai, "several", texts=120)
    mine = shard_texts(conn, run_id, (0, 2))
    op = operator(run_id)
    deferred = defer(op)
    jobs = -(-len(mine) // 25)
    assert jobs > 1 and len(deferred.trigger.batch_ids) == jobs == fake_openai.stats.batch_jobs
    counts = op.execute_complete(context={}, event=fire(deferred.trigger))
    assert counts["jobs"] == jobs and set(cached(conn)) == set(mine)
    assert operator(run_id).execute(context={})["jobs"] == 0
    assert fake_openai.stats.batch_jobs == jobs


def test_a_run_without_the_batch_api_is_refused(conn, fake_openai, airflow_env):
    run_id = start_run(conn, fake_openai, "plain", texts=4, batch_api=False)
    with pytest.raises(AirflowFailException, match="batch_api: true"):
        operator(run_id).execute(context={})
