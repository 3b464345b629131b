"""Embedding providers behind one small interface, and the embedding cache.

Providers:
- ``local``: the bundled all-MiniLM-L6-v2 (sentence-transformers, offline,
  384 dimensions, 256-token input limit), texts batched by length to cut padding.
- ``openai``: the official ``openai`` client against OpenAI or any
  OpenAI-compatible server (``OPENAI_BASE_URL``), default
  ``text-embedding-3-small``.

The cache (``sitekb.embedding_cache``) is keyed by (model, dimensions,
sha256 of the exact embedded text). Each batch is committed as it completes,
so a killed task resumes where it stopped and a retry pays nothing twice.

Settings read: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (through
:class:`sitekb.settings.Settings`), ``HF_HUB_OFFLINE`` is forced on for the
local model.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import psycopg
from pgvector import Vector

from sitekb.errors import ConfigError, TransientError
from sitekb.settings import Settings

LOCAL_DEFAULT_MODEL = "all-MiniLM-L6-v2"
OPENAI_DEFAULT_MODEL = "text-embedding-3-small"

# Native dimensions and input limits of the models sitekb knows.
MODEL_SPECS = {
    "all-MiniLM-L6-v2": {"dimensions": 384, "max_tokens": 256},
    "text-embedding-3-small": {"dimensions": 1536, "max_tokens": 8191},
    "text-embedding-3-large": {"dimensions": 3072, "max_tokens": 8191},
    "text-embedding-ada-002": {"dimensions": 1536, "max_tokens": 8191},
}


# US dollars per million input tokens; a local model costs nothing.
PRICE_PER_MILLION_TOKENS = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}


class Embedder(Protocol):
    provider: str
    model: str
    dimensions: int
    max_tokens: int
    tokenizer_name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class LocalEmbedder:
    """The bundled sentence-transformers model; loads lazily on first use."""

    provider = "local"

    def __init__(self, model: str = LOCAL_DEFAULT_MODEL, batch_size: int = 64):
        if model != LOCAL_DEFAULT_MODEL:
            raise ConfigError(
                f"local embedding model {model!r} is not bundled; the local provider ships {LOCAL_DEFAULT_MODEL}. "
                "Use provider 'openai' with an OpenAI-compatible server for other models."
            )
        self.model = model
        self.dimensions = MODEL_SPECS[model]["dimensions"]
        self.max_tokens = MODEL_SPECS[model]["max_tokens"]
        self.tokenizer_name = f"hf:{model}"
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            from sitekb.tokenization import local_model_path

            self._model = SentenceTransformer(str(local_model_path(self.model)), device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        model = self._load()
        # Sorting by length keeps each batch's padding small; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = model.encode(
            [texts[i] for i in order], batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        out = np.empty_like(vectors)
        out[order] = vectors
        return out.astype(np.float32)


class OpenAIEmbedder:
    """OpenAI or any OpenAI-compatible embeddings endpoint."""

    provider = "openai"
    MAX_INPUTS = 2048
    MAX_REQUEST_TOKENS = 300_000

    def __init__(self, settings: Settings, model: str = OPENAI_DEFAULT_MODEL, dimensions: int | None = None,
                 max_retries: int = 5, timeout: float = 60):
        try:
            import openai
        except ImportError as exc:
            raise ConfigError("the openai provider needs `pip install 'sitekb[openai]'`") from exc
        if not settings.openai_api_key and not settings.openai_base_url:
            raise ConfigError(
                "embedding provider 'openai' needs OPENAI_API_KEY (or OPENAI_BASE_URL for a compatible server)"
            )
        spec = MODEL_SPECS.get(model, {"dimensions": dimensions, "max_tokens": 8191})
        self.model = model
        self.dimensions = dimensions or spec["dimensions"]
        if not self.dimensions:
            raise ConfigError(f"model {model!r} is unknown to sitekb: set embedding.dimensions in the site config")
        self._send_dimensions = dimensions is not None and model.startswith("text-embedding-3")
        self.max_tokens = spec["max_tokens"]
        self.tokenizer_name = "cl100k_base"
        self._openai = openai
        self.client = openai.OpenAI(
            api_key=settings.openai_api_key or "sitekb-no-key",
            base_url=settings.openai_base_url,
            max_retries=max_retries,  # the client backs off and honours Retry-After on 429/5xx
            timeout=timeout,
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        kwargs = {"dimensions": self.dimensions} if self._send_dimensions else {}
        try:
            response = self.client.embeddings.create(model=self.model, input=list(texts), **kwargs)
        except (self._openai.RateLimitError, self._openai.APITimeoutError, self._openai.APIConnectionError,
                self._openai.InternalServerError) as exc:
            raise TransientError(f"embedding request failed after retries: {exc}") from exc
        except self._openai.AuthenticationError as exc:
            raise ConfigError(f"the embeddings endpoint refused the API key: {exc}") from exc
        data = sorted(response.data, key=lambda d: d.index)
        vectors = np.asarray([d.embedding for d in data], dtype=np.float32)
        if vectors.shape != (len(texts), self.dimensions):
            raise TransientError(
                f"the embeddings endpoint returned shape {vectors.shape}, expected ({len(texts)}, {self.dimensions})"
            )
        return vectors


_LOCAL_MODELS: dict[tuple[str, int], LocalEmbedder] = {}


def get_embedder(provider: str, model: str | None, dimensions: int | None = None,
                 settings: Settings | None = None, batch_size: int = 64) -> Embedder:
    """The embedder for a provider/model; local models are shared within a process (loading costs seconds)."""
    if provider == "local":
        if dimensions not in (None, MODEL_SPECS[LOCAL_DEFAULT_MODEL]["dimensions"]):
            raise ConfigError(f"the local model has {MODEL_SPECS[LOCAL_DEFAULT_MODEL]['dimensions']} dimensions; "
                              f"remove embedding.dimensions={dimensions}")
        key = (model or LOCAL_DEFAULT_MODEL, batch_size)
        if key not in _LOCAL_MODELS:
            _LOCAL_MODELS[key] = LocalEmbedder(key[0], batch_size=batch_size)
        return _LOCAL_MODELS[key]
    if provider == "openai":
        return OpenAIEmbedder(settings or Settings.from_env(), model or OPENAI_DEFAULT_MODEL, dimensions)
    raise ConfigError(f"unknown embedding provider {provider!r}: use 'local' or 'openai'")


@dataclass
class EmbedResult:
    total: int
    reused: int
    embedded: int
    requests: int
    seconds: float


def missing_hashes(conn: psycopg.Connection, run_id: str, model: str, dimensions: int) -> list[tuple[bytes, str]]:
    """(text_hash, embed_text) of the run's distinct chunks that the cache does not hold."""
    return conn.execute(
        """SELECT DISTINCT ON (c.text_hash) c.text_hash, c.embed_text
           FROM sitekb.chunks c
           WHERE c.run_id = %s AND NOT EXISTS (
               SELECT 1 FROM sitekb.embedding_cache e
               WHERE e.model = %s AND e.dimensions = %s AND e.text_hash = c.text_hash)""",
        (run_id, model, dimensions),
    ).fetchall()


def store_vectors(conn: psycopg.Connection, model: str, dimensions: int,
                  hashes: Sequence[bytes], vectors: np.ndarray) -> None:
    """Write one batch to the cache with binary COPY, then commit."""
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS embedding_batch "
            "(text_hash bytea, embedding vector) ON COMMIT DELETE ROWS"
        )
        with conn.cursor().copy("COPY embedding_batch (text_hash, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["bytea", "vector"])
            for digest, vector in zip(hashes, vectors):
                copy.write_row((digest, Vector(vector)))
        conn.execute(
            """INSERT INTO sitekb.embedding_cache (model, dimensions, text_hash, embedding)
               SELECT %s, %s, text_hash, embedding FROM embedding_batch
               ON CONFLICT DO NOTHING""",
            (model, dimensions),
        )


def embed_run(conn: psycopg.Connection, run_id: str, embedder: Embedder, batch_size: int = 64) -> EmbedResult:
    """Embed every chunk of the run that the cache lacks, one committed batch at a time."""
    started = time.monotonic()
    total = conn.execute(
        "SELECT count(DISTINCT text_hash) FROM sitekb.chunks WHERE run_id = %s", (run_id,)
    ).fetchone()[0]
    todo = missing_hashes(conn, run_id, embedder.model, embedder.dimensions)
    requests = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        vectors = embedder.embed([text for _, text in batch])
        requests += 1
        store_vectors(conn, embedder.model, embedder.dimensions, [h for h, _ in batch], vectors)
    return EmbedResult(total=total, reused=total - len(todo), embedded=len(todo), requests=requests,
                       seconds=time.monotonic() - started)


def estimate_cost(conn: psycopg.Connection, run_id: str, embedder: Embedder) -> dict:
    """Texts and tokens the cache lacks for this run, and what embedding them would cost."""
    texts, tokens = conn.execute(
        """SELECT count(*), coalesce(sum(token_count), 0) FROM (
               SELECT DISTINCT ON (c.text_hash) c.token_count FROM sitekb.chunks c
               WHERE c.run_id = %s AND NOT EXISTS (
                   SELECT 1 FROM sitekb.embedding_cache e
                   WHERE e.model = %s AND e.dimensions = %s AND e.text_hash = c.text_hash)) t""",
        (run_id, embedder.model, embedder.dimensions),
    ).fetchone()
    price = 0.0 if embedder.provider == "local" else PRICE_PER_MILLION_TOKENS.get(embedder.model, 0.0)
    return {"texts_to_embed": texts, "tokens_to_embed": int(tokens),
            "estimated_usd": round(int(tokens) * price / 1_000_000, 6)}
