"""OpenAI, or any OpenAI-compatible server (Azure OpenAI's v1 endpoint, vLLM, Ollama, LM Studio), for embeddings.

Owns talking to ``POST /embeddings`` through the official ``openai`` client:
packing texts into requests within the API limits (at most 2,048 inputs and
300,000 tokens per request, 8,191 tokens per input, counted with cl100k),
a bounded number of requests in flight, retries, and turning every failure
into one of sitekb's two kinds of error.

Retries are the client's own (``max_retries``): exponential backoff with
jitter from 0.5 s up to 8 s, and a server's ``Retry-After`` /
``Retry-After-Ms`` honoured up to two minutes, on 408, 409, 429, 5xx,
timeouts and lost connections. What still fails after them is an
:class:`~sitekb.errors.EmbeddingServiceUnavailable`, a transient error
(Airflow retries the task, and the embedding cache makes that retry pay only
for what is missing). An answer that is not embeddings (a body that is not
JSON, too few vectors, a bad index, NaN) is
:class:`~sitekb.errors.EmbeddingServiceFailed`: terminal, since the same
server asked again answers the same way. Vectors of another size than
configured, a refused key, an unknown model are a
:class:`~sitekb.errors.ConfigError`; another rejected request a
:class:`~sitekb.errors.SitekbError`. Every message names the server without
the user and password its URL may carry.

Settings read: none directly; the key and base URL come from
:func:`sitekb.embedding.embedder_for_site` (``OPENAI_API_KEY`` /
``OPENAI_BASE_URL``, the site config's ``embedding`` section, or the Airflow
connection ``sitekb_openai``).
"""

from __future__ import annotations

import base64
import binascii
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from sitekb.errors import ConfigError, EmbeddingServiceFailed, EmbeddingServiceUnavailable, SitekbError
from sitekb.providers.base import (
    MODEL_SPECS,
    OPENAI_DEFAULT_MODEL,
    UNKNOWN_MODEL_MAX_TOKENS,
    pack_batches,
)

MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
# Key sent to a compatible server that wants none (a local vLLM/Ollama):
# the client refuses to start without some key.
NO_KEY = "sitekb-no-key"


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint.

    Nothing touches the network until :meth:`embed`; a missing key is reported
    there too, so ``sitekb run --dry-run`` works without one.
    """

    provider = "openai"
    tokenizer_name = "cl100k_base"
    MAX_INPUTS = MAX_INPUTS
    MAX_REQUEST_TOKENS = MAX_REQUEST_TOKENS

    def __init__(self, settings=None, model: str = OPENAI_DEFAULT_MODEL, dimensions: int | None = None, *,
                 api_key: str | None = None, base_url: str | None = None, max_retries: int = 5,
                 timeout: float = 60.0, concurrency: int = 4, batch_size: int = MAX_INPUTS,
                 max_request_tokens: int = MAX_REQUEST_TOKENS, max_input_tokens: int | None = None,
                 price_per_million: float | None = None):
        spec = MODEL_SPECS.get(model)
        self.model = model
        self.dimensions = dimensions or (spec.dimensions if spec else 0)
        if not self.dimensions:
            raise ConfigError(
                f"model {model!r} is unknown to sitekb, so its vector size is too: "
                "set embedding.dimensions in the site config (or SITEKB_EMBEDDING_DIMENSIONS)"
            )
        if spec and dimensions and dimensions != spec.dimensions and not spec.variable_dimensions:
            raise ConfigError(f"model {model!r} always returns {spec.dimensions} dimensions; "
                              f"remove embedding.dimensions={dimensions}")
        if spec and dimensions and dimensions > spec.dimensions:
            raise ConfigError(f"model {model!r} returns at most {spec.dimensions} dimensions, "
                              f"not embedding.dimensions={dimensions}")
        # Only text-embedding-3 models accept `dimensions`; for others it is just the expected size.
        self._send_dimensions = bool(dimensions and spec and spec.variable_dimensions)
        self.max_tokens = max_input_tokens or (spec.max_tokens if spec else UNKNOWN_MODEL_MAX_TOKENS)
        self.max_batch_inputs = max(1, min(batch_size, MAX_INPUTS))
        self.max_batch_tokens = max(self.max_tokens, min(max_request_tokens, MAX_REQUEST_TOKENS))
        self.concurrency = max(1, concurrency)
        self.price_per_million = (
            price_per_million if price_per_million is not None else (spec.usd_per_million_tokens if spec else 0.0)
        )
        self.api_key = api_key if api_key is not None else getattr(settings, "openai_api_key", None)
        self.base_url = base_url if base_url is not None else getattr(settings, "openai_base_url", None)
        self.max_retries = max_retries
        self.timeout = timeout
        self._client_obj = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        where = _without_credentials(self.base_url) if self.base_url else "api.openai.com"
        return f"OpenAIEmbedder(model={self.model!r}, dimensions={self.dimensions}, base_url={where!r})"

    # -- client ----------------------------------------------------------------

    def _client(self):
        with self._client_lock:
            if self._client_obj is None:
                try:
                    import openai
                except ImportError as exc:
                    raise ConfigError("the openai provider needs `pip install 'sitekb[openai]'`") from exc
                if not self.api_key and not self.base_url:
                    raise ConfigError(
                        "embedding provider 'openai' needs an API key: set OPENAI_API_KEY (or the variable named "
                        "by embedding.api_key_env, or the Airflow connection 'sitekb_openai'); for a compatible "
                        "server without keys set OPENAI_BASE_URL or embedding.base_url"
                    )
                self._client_obj = openai.OpenAI(
                    api_key=self.api_key or NO_KEY, base_url=self.base_url,
                    max_retries=self.max_retries, timeout=self.timeout,
                )
            return self._client_obj

    # -- embedding -----------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        from sitekb.tokenization import get_tokenizer

        tokenizer = get_tokenizer("openai", self.model)
        return [tokenizer.count(text) for text in texts]

    def embed(self, texts: Sequence[str], token_counts: Sequence[int] | None = None) -> np.ndarray:
        """Vectors of `texts` in input order, packed into as few requests as the limits allow."""
        return self.embed_with_usage(texts, token_counts)[0]

    def embed_with_usage(self, texts: Sequence[str],
                         token_counts: Sequence[int] | None = None) -> tuple[np.ndarray, int | None]:
        """Vectors of `texts` and the tokens the server billed (None if it did not say)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        counts = list(token_counts) if token_counts is not None else self.count_tokens(texts)
        longest = max(counts)
        if longest > self.max_tokens:
            raise ConfigError(
                f"an input of {longest} tokens is longer than {self.model}'s limit of {self.max_tokens}; "
                "chunks are cut below it, so this is a query: shorten it"
            )
        batches = pack_batches(counts, self.max_batch_inputs, self.max_batch_tokens)
        if len(batches) == 1:
            return self._request(list(texts))
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batches))) as pool:
            results = list(pool.map(lambda r: self._request([texts[i] for i in r]), batches))
        usage = [u for _, u in results]
        billed = None if any(u is None for u in usage) else sum(usage)
        return np.vstack([v for v, _ in results]), billed

    def _request(self, texts: list[str]) -> tuple[np.ndarray, int | None]:
        """One POST /embeddings (with the client's retries); vectors in input order."""
        import openai

        client = self._client()
        kwargs = {"dimensions": self.dimensions} if self._send_dimensions else {}
        where = self.where
        tries = f"after {self.max_retries} {'retry' if self.max_retries == 1 else 'retries'}"
        wait = ("What was embedded stays cached (embedding.max_retries and embedding.timeout_seconds say how "
                "long to keep trying)")
        try:
            # base64: a quarter of the JSON size, decoded straight into numpy.
            response = client.embeddings.create(model=self.model, input=texts, encoding_format="base64", **kwargs)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ConfigError(f"{where} refused the API key ({exc.status_code}): {_message(exc)}. "
                              "Check OPENAI_API_KEY or the Airflow connection 'sitekb_openai'.") from exc
        except openai.NotFoundError as exc:
            raise ConfigError(f"{where} does not know model {self.model!r} or the embeddings "
                              f"endpoint (404): {_message(exc)}. Check embedding.model and the base URL.") from exc
        except openai.APITimeoutError as exc:
            raise EmbeddingServiceUnavailable(
                f"{where} kept failing: no answer within {self.timeout:g}s, {tries}; {wait}"
            ) from exc
        except openai.APIConnectionError as exc:
            raise EmbeddingServiceUnavailable(
                f"{where} kept failing: cannot connect ({_cause(exc)}), {tries}; {wait}"
            ) from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                raise EmbeddingServiceUnavailable(
                    f"{where} kept failing: answered {exc.status_code} ({_message(exc)}), "
                    f"{tries}; {wait}"
                ) from exc
            raise SitekbError(f"{where} rejected an embeddings request of {len(texts)} inputs "
                              f"({exc.status_code}): {_message(exc)}") from exc
        except (openai.APIResponseValidationError, ValueError, TypeError, KeyError) as exc:
            # The client raises these on a body that is not JSON, or not an embeddings response.
            what = ("the body is not valid JSON" if isinstance(exc, ValueError) and "JSON" in type(exc).__name__
                    else "its body does not have the shape of one")
            raise self._garbage(f"{what} ({_first_line(exc)})") from exc
        vectors = self._vectors(response, len(texts), where)
        usage = getattr(response, "usage", None)
        billed = getattr(usage, "prompt_tokens", None) if usage is not None else None
        return vectors, billed if isinstance(billed, int) else None

    @property
    def where(self) -> str:
        """The server, for messages: never its user or password (OPENAI_BASE_URL may carry them)."""
        return f"embedding server {_without_credentials(self.base_url)}" if self.base_url else "the OpenAI API"

    def _garbage(self, what: str) -> EmbeddingServiceFailed:
        return EmbeddingServiceFailed(
            f"{self.where} answered with something that is not an embeddings response: {what}. "
            "Check that OPENAI_BASE_URL (or embedding.base_url) is an OpenAI-compatible /v1 endpoint serving "
            f"{self.model!r}; nothing of this answer was stored"
        )

    def _vectors(self, response, expected: int, where: str) -> np.ndarray:
        data = getattr(response, "data", None)
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else f"no list ({type(data).__name__})"
            raise self._garbage(f"{got} vectors for {expected} inputs")
        out = np.empty((expected, self.dimensions), dtype=np.float32)
        seen = set()
        for item in data:
            index = getattr(item, "index", None)
            raw = getattr(item, "embedding", None)
            if not isinstance(index, int) or not 0 <= index < expected or index in seen:
                raise self._garbage(f"a vector with the index {index!r} (expected each of 0..{expected - 1} once)")
            seen.add(index)
            try:
                vector = (np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4") if isinstance(raw, str)
                          else np.asarray(raw, dtype=np.float32))  # a server that ignores encoding_format
            except (binascii.Error, ValueError, TypeError) as exc:
                raise self._garbage(f"the vector at index {index} cannot be decoded ({_first_line(exc)})") from exc
            if vector.shape != (self.dimensions,):
                ignored = (" (it ignores the `dimensions` parameter, or serves another model)"
                           if self._send_dimensions else "")
                raise ConfigError(
                    f"{where} returned {vector.size}-dimensional vectors for {self.model!r}, "
                    f"but sitekb expects {self.dimensions}{ignored}: set embedding.dimensions to the model's size"
                )
            if not np.isfinite(vector).all():
                raise self._garbage(f"the vector at index {index} holds NaN or infinite values")
            out[index] = vector
        return out


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _cause(exc: BaseException) -> str:
    """What lies under the client's "Connection error." (refused, reset, name not known)."""
    cause = exc.__cause__ or exc.__context__
    return _first_line(cause) if cause is not None else _first_line(exc)


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))
