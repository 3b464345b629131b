"""The OpenAI provider: the real `openai` client against the fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

from sitekb.embedding import get_embedder
from sitekb.errors import (
    ConfigError,
    EmbeddingServiceFailed,
    EmbeddingServiceUnavailable,
    SitekbError,
    TransientError,
)
from sitekb.providers.openai_api import MAX_INPUTS, MAX_REQUEST_TOKENS, OpenAIEmbedder
from sitekb.settings import Settings
from tests.fake_openai import FakeOpenAI, fake_openai, fake_openai_server, fake_vector  # noqa: F401 (fixtures)


def embedder(server: FakeOpenAI, **options) -> OpenAIEmbedder:
    options.setdefault("dimensions", 32)
    dims = options.pop("dimensions")
    return get_embedder("openai", options.pop("model", "text-embedding-3-small"), dims,
                        api_key="test-key", base_url=server.base_url, **options)


def test_vectors_come_back_in_input_order_with_the_requested_dimensions(fake_openai):
    texts = ["lead scoring basics", "email deliverability", "lead scoring basics again"]
    vectors = embedder(fake_openai, dimensions=48).embed(texts)
    assert vectors.shape == (3, 48) and vectors.dtype == np.float32
    for text, vector in zip(texts, vectors):
        np.testing.assert_allclose(vector, fake_vector(text, 48, "text-embedding-3-small"), rtol=1e-6)
    (request,) = fake_openai.stats.log
    assert (request.inputs, request.dimensions, request.model) == (3, 48, "text-embedding-3-small")


def test_dimensions_are_only_sent_to_models_that_accept_them(fake_openai):
    vectors = embedder(fake_openai, model="text-embedding-ada-002", dimensions=None).embed(["x"])
    assert vectors.shape == (1, 1536)
    assert fake_openai.stats.log[0].dimensions is None
    with pytest.raises(ConfigError, match="always returns 1536"):
        embedder(fake_openai, model="text-embedding-ada-002", dimensions=256)
    with pytest.raises(ConfigError, match="embedding.dimensions"):
        embedder(fake_openai, model="nomic-embed-text", dimensions=None)
    # An unknown model on a compatible server works once its size is configured.
    assert embedder(fake_openai, model="nomic-embed-text", dimensions=1536).embed(["y"]).shape == (1, 1536)


def test_requests_are_packed_to_the_input_limit(fake_openai):
    texts = [f"word{i}" for i in range(MAX_INPUTS * 2 + 5)]
    vectors = embedder(fake_openai, concurrency=2).embed(texts)
    assert vectors.shape == (len(texts), 32)
    assert sorted(r.inputs for r in fake_openai.stats.log) == [5, MAX_INPUTS, MAX_INPUTS]
    assert all(r.status == 200 for r in fake_openai.stats.log)
    np.testing.assert_allclose(vectors[-1], fake_vector(texts[-1], 32, "text-embedding-3-small"), rtol=1e-6)


def test_requests_are_packed_to_the_token_limit(fake_openai):
    # ~5,000 tokens each: 60 fit the 300,000-token limit, far below 2,048 inputs.
    text = "alpha beta gamma delta epsilon " * 1000
    e = embedder(fake_openai)
    count = e.count_tokens([text])[0]
    per_request = MAX_REQUEST_TOKENS // count
    texts = [f"{i} {text}" for i in range(per_request + 10)]
    vectors = e.embed(texts)
    assert vectors.shape == (len(texts), 32)
    log = fake_openai.stats.log
    assert len(log) == 2 and all(r.status == 200 for r in log)  # the server enforces the limits
    assert max(r.tokens for r in log) <= MAX_REQUEST_TOKENS
    assert max(r.tokens for r in log) > MAX_REQUEST_TOKENS * 0.95


def test_an_input_over_the_model_limit_is_refused_before_any_request(fake_openai):
    with pytest.raises(ConfigError, match="limit of 8191"):
        embedder(fake_openai).embed(["token " * 9000])
    assert fake_openai.stats.requests == 0


def test_429_is_retried_after_retry_after(fake_openai):
    fake_openai.queue("429", retry_after=1)
    vectors = embedder(fake_openai).embed(["retry me"])
    assert vectors.shape == (1, 32)
    first, second = fake_openai.stats.log
    assert (first.status, second.status) == (429, 200)
    # The client waited at least the server's Retry-After (a lower bound, never flaky).
    assert second.started - first.finished >= 0.9


def test_5xx_is_retried_then_reported_as_transient(fake_openai):
    fake_openai.queue("500", 2)
    assert embedder(fake_openai, max_retries=2).embed(["x"]).shape == (1, 32)
    assert [r.status for r in fake_openai.stats.log] == [500, 500, 200]
    fake_openai.reset()
    fake_openai.queue("500", 3)
    with pytest.raises(EmbeddingServiceUnavailable, match=r"kept failing: answered 500 \(.*\), after 2 retries"):
        embedder(fake_openai, max_retries=2).embed(["x"])
    assert fake_openai.stats.requests == 3
    assert issubclass(EmbeddingServiceUnavailable, TransientError)  # Airflow retries it


def test_a_timeout_is_retried(fake_openai):
    fake_openai.queue("slow", delay=5)
    vectors = embedder(fake_openai, max_retries=1, timeout=0.5).embed(["slow"])
    assert vectors.shape == (1, 32)
    assert fake_openai.stats.requests == 2
    fake_openai.queue("slow", 2, delay=5)
    with pytest.raises(EmbeddingServiceUnavailable, match=r"no answer within 0.5s, after 1 retry\b"):
        embedder(fake_openai, max_retries=1, timeout=0.5).embed(["slow"])


@pytest.mark.parametrize(("behaviour", "what"), [
    ("malformed", "the body is not valid JSON"),
    ("wrong_count", "1 vectors for 2 inputs"),
    ("nan", "the vector at index 0 holds NaN or infinite values"),
])
def test_an_answer_that_is_not_embeddings_is_terminal_and_names_the_server(fake_openai, behaviour, what):
    fake_openai.queue(behaviour)
    with pytest.raises(EmbeddingServiceFailed, match="not an embeddings response") as caught:
        embedder(fake_openai).embed(["one", "two"])
    assert what in str(caught.value) and fake_openai.base_url in str(caught.value)
    assert not isinstance(caught.value, TransientError) and fake_openai.stats.requests == 1


def test_malformed_vectors_are_caught(fake_openai):
    bad_base64 = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":"%%%"}],"model":"m"}'
    fake_openai.queue("malformed", body=bad_base64)
    with pytest.raises(EmbeddingServiceFailed, match="the vector at index 0 cannot be decoded"):
        embedder(fake_openai).embed(["one"])
    floats = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5, 0.5]}],"model":"m"}'
    fake_openai.queue("malformed", body=floats)
    with pytest.raises(ConfigError, match="2-dimensional vectors"):
        embedder(fake_openai).embed(["one"])
    fake_openai.queue("wrong_dimensions")
    with pytest.raises(ConfigError, match="33-dimensional .* expects 32 .*ignores the `dimensions` parameter"):
        embedder(fake_openai).embed(["one"])


def test_a_server_that_keeps_failing_is_named_without_its_password(fake_openai):
    fake_openai.always("429", retry_after=0)
    url = fake_openai.base_url.replace("http://", "http://user:s3cret@")
    e = get_embedder("openai", "text-embedding-3-small", 32, api_key="k", base_url=url, max_retries=1)
    with pytest.raises(EmbeddingServiceUnavailable, match="answered 429") as caught:
        e.embed(["x"])
    assert fake_openai.base_url in str(caught.value) and "s3cret" not in str(caught.value)
    assert fake_openai.stats.requests == 2


def test_a_refused_key_is_terminal_and_not_retried():
    with FakeOpenAI(api_key="right") as server:
        e = get_embedder("openai", "text-embedding-3-small", 32, api_key="wrong", base_url=server.base_url)
        with pytest.raises(ConfigError, match="refused the API key"):
            e.embed(["x"])
        assert server.stats.requests == 1
        right = get_embedder("openai", "text-embedding-3-small", 32, api_key="right", base_url=server.base_url)
        assert right.embed(["x"]).shape == (1, 32)


def test_a_rejected_request_is_terminal_and_not_retried(fake_openai):
    with pytest.raises(SitekbError, match=r"rejected .* \(400\): 'input' cannot contain an empty string"):
        embedder(fake_openai).embed(["fine", ""])
    assert fake_openai.stats.requests == 1
    assert not isinstance(SitekbError("x"), TransientError)
    with pytest.raises(ConfigError, match="at most 1536 dimensions"):
        embedder(fake_openai, dimensions=5000)


def test_no_key_and_no_base_url_fails_at_first_use_with_advice():
    e = OpenAIEmbedder(Settings(), "text-embedding-3-small")  # constructing needs nothing
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        e.embed(["x"])


def test_key_and_base_url_come_from_settings(fake_openai):
    settings = Settings(openai_api_key="k", openai_base_url=fake_openai.base_url)
    e = get_embedder("openai", None, None, settings)
    assert (e.model, e.dimensions, e.base_url, e.api_key) == ("text-embedding-3-small", 1536, fake_openai.base_url, "k")
    assert e.embed(["from settings"]).shape == (1, 1536)
