"""The bundled local model: all-MiniLM-L6-v2, offline, run by ONNX Runtime or torch.

Owns loading the model once per process (importing torch and transformers
takes longer than embedding a small site, so the loaded model is shared by
every :class:`LocalEmbedder` and can be loaded ahead in a background thread
with :meth:`LocalEmbedder.prewarm`), choosing its runtime, and encoding with
length-sorted batches.

Runtimes (``runtime``, from ``SITEKB_LOCAL_RUNTIME`` through
:class:`sitekb.settings.Settings`): ``onnx`` runs the model converted to ONNX
(:mod:`sitekb.providers.local_onnx`, cached in ``cache_dir``); ``torch`` runs
sentence-transformers; ``auto`` (the default) is onnx when onnxruntime is
installed and the conversion succeeds, else torch, with a log line saying
why. Both give the same vectors (cosine >= 0.999, tests/unit/test_local_onnx.py),
so the model name, and with it the embedding cache key and what snapshots
record, is the same for both. ``all-MiniLM-L6-v2-int8`` is the same files
quantised to int8: other vectors, so another model name, and ONNX Runtime only
(whatever the runtime setting says, it never falls back to torch).

Settings read: none (runtime and cache folder are passed in). The model loads
from the bundled package's folder, never from a hub; entry points set
``HF_HUB_OFFLINE=1`` besides. Transformers' progress bars are switched off:
a log is no place for them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from sitekb.errors import ConfigError
from sitekb.providers.base import LOCAL_DEFAULT_MODEL, LOCAL_INT8_MODEL, LOCAL_MODELS, MODEL_SPECS

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "torch")
# Where converted models go when the caller names no folder (entry points pass $SITEKB_HOME/models).
DEFAULT_CACHE_DIR = Path("~/.cache/sitekb/models")

_MODELS: dict[str, object] = {}          # model name -> SentenceTransformer
_BACKENDS: dict[tuple[str, str], object] = {}  # (model name, requested runtime) -> encoder
_LOAD_SECONDS: dict[tuple[str, str], float] = {}
_LOCK = threading.RLock()                # one loader at a time; others wait for its result
_PREWARM: dict[tuple[str, str], threading.Thread] = {}


class _TorchEncoder:
    """sentence-transformers' encode, as the ONNX encoder's twin."""

    runtime = "torch"

    def __init__(self, model) -> None:
        self.model = model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        # encode() sorts its input by length itself, so each forward batch is
        # padded to similar lengths. Progress bars stay off: they cost a
        # terminal write per batch.
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)


def _load_onnx(name: str, cache_dir: Path):
    from sitekb.providers.local_onnx import OnnxSentenceEncoder
    from sitekb.tokenization import local_model_path

    return OnnxSentenceEncoder(local_model_path(name), cache_dir, quantize=name == LOCAL_INT8_MODEL)


def _load_backend(name: str, runtime: str, cache_dir: Path):
    """The encoder of `name` for a requested runtime, loaded once per process."""
    key = (name, runtime)
    with _LOCK:
        if key not in _BACKENDS:
            started = time.monotonic()
            if name == LOCAL_INT8_MODEL:
                backend = _load_int8(name, runtime, cache_dir)
            elif runtime == "torch":
                backend = _TorchEncoder(_load_model(name))
            elif runtime == "onnx":
                try:
                    backend = _load_onnx(name, cache_dir)
                except Exception as exc:  # noqa: BLE001 - whatever failed, the user's next step is the same
                    raise ConfigError(f"SITEKB_LOCAL_RUNTIME=onnx, but the ONNX runtime cannot run the local "
                                      f"model: {_first_line(exc)}. Install onnxruntime and onnx, or set "
                                      "SITEKB_LOCAL_RUNTIME=torch (or auto).") from exc
            else:
                backend = _load_auto(name, cache_dir)
            _BACKENDS[key] = backend
            _LOAD_SECONDS[key] = time.monotonic() - started
        return _BACKENDS[key]


def _load_int8(name: str, runtime: str, cache_dir: Path):
    """The int8 model runs on ONNX Runtime or not at all: torch would give other vectors under its name."""
    if runtime == "torch":
        raise ConfigError(f"the local model {name} runs on ONNX Runtime only, and SITEKB_LOCAL_RUNTIME=torch: "
                          f"unset it (or set auto), or use {LOCAL_DEFAULT_MODEL}")
    try:
        backend = _load_onnx(name, cache_dir)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the user's next step is the same
        raise ConfigError(f"the local model {name} runs on ONNX Runtime only, which cannot run it here: "
                          f"{_first_line(exc)}. Install onnxruntime and onnx, or use {LOCAL_DEFAULT_MODEL}") from exc
    log.info("local model %s runs on ONNX Runtime %s (%s)", name, backend.runtime_version, backend.path)
    return backend


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_auto(name: str, cache_dir: Path):
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        log.info("local model %s runs on torch: onnxruntime is not installed", name)
        return _TorchEncoder(_load_model(name))
    try:
        backend = _load_onnx(name, cache_dir)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional fast path falls back to torch
        log.warning("local model %s runs on torch: the ONNX conversion failed (%s: %s)", name,
                    type(exc).__name__, _first_line(exc))
        return _TorchEncoder(_load_model(name))
    log.info("local model %s runs on ONNX Runtime %s (%s)", name, backend.runtime_version, backend.path)
    return backend


def _load_model(name: str):
    """The sentence-transformers model of `name` (torch), loaded once per process."""
    with _LOCK:
        if name not in _MODELS:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()

            from sitekb.tokenization import local_model_path

            _MODELS[name] = SentenceTransformer(str(local_model_path(name)), device="cpu")
        return _MODELS[name]


class LocalEmbedder:
    """The bundled model; it loads on first use (or prewarm), on the runtime asked for."""

    provider = "local"
    concurrency = 1  # torch already uses every core for one batch
    max_batch_tokens = None
    price_per_million = 0.0

    def __init__(self, model: str = LOCAL_DEFAULT_MODEL, batch_size: int = 64, *, runtime: str = "auto",
                 cache_dir: str | Path | None = None):
        if model not in LOCAL_MODELS:
            raise ConfigError(
                f"local embedding model {model!r} is not bundled; the local provider ships {LOCAL_DEFAULT_MODEL} "
                f"(and {LOCAL_INT8_MODEL}, its int8 quantisation on ONNX Runtime). "
                "Use provider 'openai' with an OpenAI-compatible server for other models."
            )
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown local runtime {runtime!r}: set SITEKB_LOCAL_RUNTIME to auto, onnx or torch")
        spec = MODEL_SPECS[model]
        self.model = model
        self.runtime = runtime
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        self.dimensions = spec.dimensions
        self.max_tokens = spec.max_tokens
        self.tokenizer_name = f"hf:{model}"
        self.batch_size = batch_size
        self.max_batch_inputs = batch_size

    @property
    def _key(self) -> tuple[str, str]:
        return (self.model, self.runtime)

    @property
    def loaded(self) -> bool:
        return self._key in _BACKENDS

    @property
    def runtime_used(self) -> str | None:
        """``onnx`` or ``torch`` once loaded (what ``auto`` resolved to), else None."""
        backend = _BACKENDS.get(self._key)
        return getattr(backend, "runtime", None)

    def load_seconds(self) -> float | None:
        """Seconds the (shared) model took to load in this process, None if not loaded yet."""
        return _LOAD_SECONDS.get(self._key)

    def warm(self) -> float:
        """Load the model now (waiting for a prewarm in progress); return the seconds spent waiting."""
        started = time.monotonic()
        _load_backend(self.model, self.runtime, self.cache_dir)
        return time.monotonic() - started

    def prewarm(self) -> None:
        """Start loading the model in a background thread, so a later stage finds it ready.

        A failure is not raised here: the next :meth:`embed` loads again and raises it.
        """
        if self.loaded or (self._key in _PREWARM and _PREWARM[self._key].is_alive()):
            return

        def load() -> None:
            try:
                _load_backend(self.model, self.runtime, self.cache_dir)
            except Exception:  # noqa: BLE001 - reported by the foreground load that follows
                pass

        thread = threading.Thread(target=load, name=f"sitekb-prewarm-{self.model}", daemon=True)
        _PREWARM[self._key] = thread
        thread.start()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts` in input order."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        backend = _load_backend(self.model, self.runtime, self.cache_dir)
        # Both encoders sort by length themselves; embed_run also hands over length-sorted batches.
        vectors = backend.encode(list(texts), batch_size=self.batch_size)
        return np.ascontiguousarray(vectors, dtype=np.float32)
