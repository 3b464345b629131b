"""The bundled local model: all-MiniLM-L6-v2 through sentence-transformers, offline.

Owns loading the model once per process (importing torch and transformers
takes longer than embedding a small site, so the loaded model is shared by
every :class:`LocalEmbedder` and can be loaded ahead in a background thread
with :meth:`LocalEmbedder.prewarm`) and encoding with length-sorted batches.

Settings read: none. The model loads from the bundled package's folder, never
from a hub; entry points set ``HF_HUB_OFFLINE=1`` besides. Transformers'
progress bars are switched off: a log is no place for them.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from sitekb.errors import ConfigError
from sitekb.providers.base import LOCAL_DEFAULT_MODEL, MODEL_SPECS

_MODELS: dict[str, object] = {}          # model name -> SentenceTransformer
_LOAD_SECONDS: dict[str, float] = {}
_LOCK = threading.Lock()                 # one loader at a time; others wait for its result
_PREWARM: dict[str, threading.Thread] = {}


def _load_model(name: str):
    with _LOCK:
        if name not in _MODELS:
            started = time.monotonic()
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()

            from sitekb.tokenization import local_model_path

            _MODELS[name] = SentenceTransformer(str(local_model_path(name)), device="cpu")
            _LOAD_SECONDS[name] = time.monotonic() - started
        return _MODELS[name]


class LocalEmbedder:
    """The bundled sentence-transformers model; the model loads on first use (or prewarm)."""

    provider = "local"
    concurrency = 1  # torch already uses every core for one batch
    max_batch_tokens = None
    price_per_million = 0.0

    def __init__(self, model: str = LOCAL_DEFAULT_MODEL, batch_size: int = 64):
        if model != LOCAL_DEFAULT_MODEL:
            raise ConfigError(
                f"local embedding model {model!r} is not bundled; the local provider ships {LOCAL_DEFAULT_MODEL}. "
                "Use provider 'openai' with an OpenAI-compatible server for other models."
            )
        spec = MODEL_SPECS[model]
        self.model = model
        self.dimensions = spec.dimensions
        self.max_tokens = spec.max_tokens
        self.tokenizer_name = f"hf:{model}"
        self.batch_size = batch_size
        self.max_batch_inputs = batch_size

    @property
    def loaded(self) -> bool:
        return self.model in _MODELS

    def load_seconds(self) -> float | None:
        """Seconds the (shared) model took to load in this process, None if not loaded yet."""
        return _LOAD_SECONDS.get(self.model)

    def warm(self) -> float:
        """Load the model now (waiting for a prewarm in progress); return the seconds spent waiting."""
        started = time.monotonic()
        _load_model(self.model)
        return time.monotonic() - started

    def prewarm(self) -> None:
        """Start loading the model in a background thread, so a later stage finds it ready.

        A failure is not raised here: the next :meth:`embed` loads again and raises it.
        """
        if self.loaded or (self.model in _PREWARM and _PREWARM[self.model].is_alive()):
            return

        def load() -> None:
            try:
                _load_model(self.model)
            except Exception:  # noqa: BLE001 - reported by the foreground load that follows
                pass

        thread = threading.Thread(target=load, name=f"sitekb-prewarm-{self.model}", daemon=True)
        _PREWARM[self.model] = thread
        thread.start()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts` in input order."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        model = _load_model(self.model)
        # encode() sorts its input by length itself, so each forward batch is
        # padded to similar lengths; embed_run also hands over length-sorted
        # batches. Progress bars stay off: they cost a terminal write per batch.
        vectors = model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
