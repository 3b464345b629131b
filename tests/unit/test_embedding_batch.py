"""OpenAI's Batch API through the same interface, against the fake server's /v1/files and /v1/batches."""

from __future__ import annotations

import numpy as np
import pytest

from sitekb.embedding import embedder_for_site, get_embedder
from sitekb.errors import TransientError
from sitekb.providers.openai_batch import OpenAIBatchEmbedder
from sitekb.settings import Settings
from sitekb.sites import EmbeddingSettings
from tests.fake_openai import fake_openai, fake_openai_server  # noqa: F401 (fixtures)

MODEL = "text-embedding-3-small"


def batch_embedder(server, **options) -> OpenAIBatchEmbedder:
    emb = EmbeddingSettings(provider="openai", model=MODEL, dimensions=24, batch_api=True, batch_poll_seconds=0.01,
                            base_url=server.base_url, **options)
    embedder = embedder_for_site(emb, Settings(openai_api_key="test"))
    embedder.MAX_INPUTS = 100  # small request lines, so a few hundred texts make several
    return embedder


def test_batch_api_gives_the_same_vectors_at_half_the_price(fake_openai):
    embedder = batch_embedder(fake_openai)
    assert isinstance(embedder, OpenAIBatchEmbedder) and embedder.price_per_million == pytest.approx(0.01)
    texts = [f"passage number {i} about lead scoring" for i in range(250)]
    vectors, billed = embedder.embed_with_usage(texts)
    assert fake_openai.stats.batch_jobs == 1 and fake_openai.stats.requests == 0
    assert fake_openai.stats.batch_inputs == len(texts) and billed > len(texts)
    sync = get_embedder("openai", MODEL, 24, api_key="test", base_url=fake_openai.base_url)
    np.testing.assert_allclose(vectors, sync.embed(texts), rtol=1e-6)
    configured = batch_embedder(fake_openai, prices_usd_per_million={MODEL: 0.004})
    assert configured.price_per_million == 0.004


def test_a_retried_task_waits_for_the_same_job_instead_of_paying_again(fake_openai):
    texts = [f"text {i}" for i in range(50)]
    fake_openai.batch_polls = 3
    first = batch_embedder(fake_openai, batch_max_wait_minutes=0.0001)
    with pytest.raises(TransientError, match="retry the task"):
        first.embed_with_usage(texts)  # gives up waiting, like a task that hit its time limit
    retry = batch_embedder(fake_openai)
    vectors, _ = retry.embed_with_usage(texts)
    assert vectors.shape == (50, 24)
    assert fake_openai.stats.batch_jobs == 1 and retry.jobs_submitted == 0


def test_failed_lines_alone_go_through_the_synchronous_endpoint(fake_openai):
    fake_openai.fail_batch_lines = {1}
    embedder = batch_embedder(fake_openai)
    texts = [f"text {i}" for i in range(250)]  # three lines of at most 100 inputs
    vectors, _ = embedder.embed_with_usage(texts)
    assert [r.inputs for r in fake_openai.stats.log] == [100]
    assert fake_openai.stats.batch_inputs == 150 and fake_openai.stats.texts == texts[100:200]
    sync = get_embedder("openai", MODEL, 24, api_key="test", base_url=fake_openai.base_url)
    np.testing.assert_allclose(vectors[90:110], sync.embed(texts[90:110]), rtol=1e-6)


def test_the_job_steps_resume_anywhere_without_sleeping(fake_openai):
    from sitekb.errors import SitekbError

    texts = [f"step text {i}" for i in range(250)]
    fake_openai.batch_polls = 1
    fake_openai.fail_batch_lines = {2}
    job = batch_embedder(fake_openai).submit_job(texts)
    assert not job.done and job.key == batch_embedder(fake_openai).job_key(texts)
    with pytest.raises(TransientError, match="still"):
        batch_embedder(fake_openai).collect(job, texts)  # not done yet: nothing to read
    # Another process (a resumed task) knows only the job id: status, then vectors read back from the job's files.
    later = batch_embedder(fake_openai)
    assert later.check_job(job.batch_id).done and later.submit_job(texts) == later.check_job(job.batch_id)
    output = later.collect(job.batch_id)
    assert output.texts == texts and output.missing == [2] and not output.done_rows[200:].any()
    assert later.missing_tokens(output) > 0 and fake_openai.stats.requests == 0
    later.resend(output)
    assert output.done_rows.all() and output.resent == 50 and fake_openai.stats.texts == texts[200:]
    sync = get_embedder("openai", MODEL, 24, api_key="test", base_url=fake_openai.base_url)
    np.testing.assert_allclose(output.vectors, sync.embed(texts), rtol=1e-6)
    assert fake_openai.stats.batch_jobs == 1 and later.jobs_submitted == 0
    fake_openai.fail_batch_validation = "the model is not available in the Batch API"
    failed = batch_embedder(fake_openai).new_job(["another text"])
    with pytest.raises(SitekbError, match="failed validation: the model is not available"):
        batch_embedder(fake_openai).wait(failed)
