"""What every embedding provider offers, the models sitekb knows, and request packing.

Owns the :class:`Embedder` protocol, the table of known models (native
dimensions, input limit, default price) and :func:`pack_batches`, which packs
texts into requests that respect a provider's limits. Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

LOCAL_DEFAULT_MODEL = "all-MiniLM-L6-v2"
# The same weights quantised to int8 and run on ONNX Runtime only: about 2.3x the chunks/s of
# torch here, with vectors that differ (cosine ~0.99 to fp32), so it is a model of its own to
# snapshots and the embedding cache (bench-results/local_runtime.json). Its activations are scaled
# per batch, so a text's vector moves a little with its batch (cosine > 0.98). Opt in by naming it.
LOCAL_INT8_MODEL = "all-MiniLM-L6-v2-int8"
LOCAL_MODELS = (LOCAL_DEFAULT_MODEL, LOCAL_INT8_MODEL)
# The languages the bundled local models were trained on: all-MiniLM-L6-v2 knows English only,
# and its vectors of other text place it by shared tokens, not meaning. A site in other
# languages wants a multilingual model behind an OpenAI-compatible server (README, Languages).
LOCAL_MODEL_LANGUAGES = {LOCAL_DEFAULT_MODEL: ("en",), LOCAL_INT8_MODEL: ("en",)}
OPENAI_DEFAULT_MODEL = "text-embedding-3-small"


@dataclass(frozen=True)
class ModelSpec:
    """What sitekb knows about a model without asking it."""

    dimensions: int
    max_tokens: int                      # input limit, special tokens included
    usd_per_million_tokens: float = 0.0  # list price of the synchronous API
    variable_dimensions: bool = False    # accepts the `dimensions` parameter


MODEL_SPECS: dict[str, ModelSpec] = {
    "all-MiniLM-L6-v2": ModelSpec(384, 256),
    "all-MiniLM-L6-v2-int8": ModelSpec(384, 256),
    "text-embedding-3-small": ModelSpec(1536, 8191, 0.02, variable_dimensions=True),
    "text-embedding-3-large": ModelSpec(3072, 8191, 0.13, variable_dimensions=True),
    "text-embedding-ada-002": ModelSpec(1536, 8191, 0.10),
}

# A model served by an OpenAI-compatible server that sitekb does not know
# (vLLM, Ollama, ...): OpenAI's input limit until the site config says otherwise.
UNKNOWN_MODEL_MAX_TOKENS = 8191


@runtime_checkable
class Embedder(Protocol):
    """One embedding model behind one provider."""

    provider: str          # "local" or "openai"
    model: str
    dimensions: int
    max_tokens: int        # largest input, in the model's own tokens
    tokenizer_name: str
    max_batch_inputs: int  # inputs per request (or per forward batch)
    max_batch_tokens: int | None  # tokens per request, None: no limit
    concurrency: int       # requests in flight at once
    price_per_million: float  # USD per million input tokens (0 for a local model)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of `texts`, one row each, in input order (float32)."""
        ...


def pack_batches(token_counts: Sequence[int], max_inputs: int, max_tokens: int | None) -> list[range]:
    """Consecutive index ranges of `token_counts` that each fit one request.

    Greedy in the given order, so a caller that sorts by length also gets
    batches of similar length (less padding for a local model). Every range
    holds at most `max_inputs` items and, when `max_tokens` is set, at most
    `max_tokens` tokens; a single item above `max_tokens` is a caller bug.
    """
    if max_inputs < 1:
        raise ValueError(f"max_inputs must be positive, got {max_inputs}")
    batches: list[range] = []
    start = tokens = 0
    for index, count in enumerate(token_counts):
        if max_tokens is not None and count > max_tokens:
            raise ValueError(f"item {index} has {count} tokens, more than a whole request may hold ({max_tokens})")
        full = index - start >= max_inputs or (max_tokens is not None and tokens + count > max_tokens)
        if full:
            batches.append(range(start, index))
            start, tokens = index, 0
        tokens += count
    if start < len(token_counts):
        batches.append(range(start, len(token_counts)))
    return batches
