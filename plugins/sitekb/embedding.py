"""Embedding a run's chunks so that no text is ever paid for twice.

Owns choosing the embedder of a site config once per run (:func:`choose`,
recorded on the run as an :class:`EmbedderChoice`, and :func:`embedder_for_run`
for every later stage), the embedder of a query (:func:`query_embedder`), cost
estimates and the budget, and :func:`embed_run`, the body of the embed stage.
The providers themselves live in :mod:`sitekb.providers`; the cache's SQL in
:mod:`sitekb.store.embeddings`.

The cache (``sitekb.embedding_cache``) is keyed by (model, dimensions, sha256
of the exact embedded text). :func:`embed_run` asks it which of the run's
texts are missing, packs only those into requests within the provider's
limits, and commits each request's vectors as soon as it returns, together
with what it cost (``sitekb.embedding_spend``). A task killed halfway
therefore resumes where it stopped, a retried task pays only for the rest,
and an unchanged re-run sends no request at all.

Cost control: :func:`estimate_cost` counts the tokens still to embed (the
chunker counted them with the model's own tokenizer) and prices them;
:func:`check_budget` raises :class:`~sitekb.errors.BudgetExceeded` before the
first request when a run's spend so far plus the estimate would pass its
budget, and :func:`embed_run` stops before any request that would.

Settings read (passed in): ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` through
:class:`sitekb.settings.Settings` (which win over the site file's
``embedding.base_url``), the variable named by ``embedding.api_key_env``
(:meth:`Settings.secret`), and the site config's ``embedding`` section
(provider, model, dimensions, batch_size, concurrency, max_retries,
timeout_seconds, prices_usd_per_million, budget_usd).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import psycopg

from sitekb.errors import BudgetExceeded, ConfigError
from sitekb.providers.base import (
    LOCAL_DEFAULT_MODEL,
    MODEL_SPECS,
    OPENAI_DEFAULT_MODEL,
    Embedder,
    pack_batches,
)
from sitekb.providers.local import LocalEmbedder
from sitekb.providers.openai_api import OpenAIEmbedder
from sitekb.settings import Settings
from sitekb.store import embeddings as cache
from sitekb.store.snapshots import without_credentials

if TYPE_CHECKING:
    from sitekb.sites import EmbeddingSettings

__all__ = [
    "LOCAL_DEFAULT_MODEL", "MODEL_SPECS", "OPENAI_DEFAULT_MODEL", "PRICE_PER_MILLION_TOKENS", "EmbedResult",
    "Embedder", "EmbedderChoice", "LocalEmbedder", "OpenAIEmbedder", "check_budget", "choose", "embed_run",
    "embedder_for_run", "embedder_for_site", "estimate_cost", "get_embedder", "openai_endpoint", "query_embedder",
    "text_hash",
]

log = logging.getLogger(__name__)

# US dollars per million input tokens (list prices of the synchronous API); a
# site config's embedding.prices_usd_per_million overrides them, and a local
# model costs nothing.
PRICE_PER_MILLION_TOKENS = {name: spec.usd_per_million_tokens for name, spec in MODEL_SPECS.items()
                            if spec.usd_per_million_tokens}
LOCAL_BATCH_SIZE = 64


def text_hash(text: str) -> bytes:
    """The cache key of an embedded text: sha256 of its exact UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# -- choosing an embedder ---------------------------------------------------------

def get_embedder(provider: str, model: str | None, dimensions: int | None = None,
                 settings: Settings | None = None, batch_size: int | None = None, **options) -> Embedder:
    """The embedder for a provider/model. Cheap: nothing loads or connects until embed().

    The local model itself is loaded once per process and shared. `options` go
    to :class:`OpenAIEmbedder` (api_key, base_url, concurrency, max_retries,
    timeout, price_per_million, max_input_tokens).
    """
    if provider == "local":
        native = MODEL_SPECS[LOCAL_DEFAULT_MODEL].dimensions
        if dimensions not in (None, native):
            raise ConfigError(f"the local model has {native} dimensions; remove embedding.dimensions={dimensions}")
        return LocalEmbedder(model or LOCAL_DEFAULT_MODEL, batch_size=batch_size or LOCAL_BATCH_SIZE,
                             **local_runtime_options(settings))
    if provider == "openai":
        if batch_size:
            options["batch_size"] = batch_size
        return OpenAIEmbedder(settings, model or OPENAI_DEFAULT_MODEL, dimensions, **options)
    raise ConfigError(f"unknown embedding provider {provider!r}: use 'local' or 'openai'")


def local_runtime_options(settings: Settings | None) -> dict:
    """How the local model runs (``SITEKB_LOCAL_RUNTIME``), for bulk text and questions alike.

    ``auto`` (the default) runs it on ONNX Runtime, converted once from the
    bundled weights with attention and layer norms fused: the same vectors as
    torch (cosine >= 0.99999), 1.4-1.6x torch's chunks/s on this project's 2-core
    machine, and a 0.1-0.4 s load against torch's ~5 s, so a fresh ``sitekb
    serve`` answers at once (bench-results/local_runtime.json). Where ONNX cannot
    run, ``auto`` falls back to torch and the log says why. The converted model
    is cached in the user's cache folder (``~/.cache/sitekb/models``), shared by
    every sitekb home: its file name carries the hash of the model files and the
    runtime versions.
    """
    return {"runtime": settings.local_runtime if settings is not None else "auto"}


def embedder_for_site(emb: "EmbeddingSettings", settings: Settings) -> Embedder:
    """The embedder a site's ``embedding`` config describes.

    Key and server: :func:`openai_endpoint`.
    """
    if emb.provider == "local":
        return get_embedder("local", emb.model, emb.dimensions, settings, batch_size=emb.batch_size)
    model = emb.model or OPENAI_DEFAULT_MODEL
    api_key, base_url = openai_endpoint(settings, emb.api_key_env, emb.base_url)
    options = dict(
        api_key=api_key, base_url=base_url,
        concurrency=emb.concurrency, max_retries=emb.max_retries, timeout=emb.timeout_seconds,
        max_input_tokens=emb.max_input_tokens,
    )
    if emb.batch_api:
        from sitekb.providers.openai_batch import BATCH_DISCOUNT, OpenAIBatchEmbedder

        # A price set in the site config is taken as the batch price as given.
        price = (emb.prices_usd_per_million[model] if model in emb.prices_usd_per_million
                 else price_per_million(model) * BATCH_DISCOUNT)
        return OpenAIBatchEmbedder(settings, model, emb.dimensions, price_per_million=price,
                                   poll_seconds=emb.batch_poll_seconds,
                                   max_wait_minutes=emb.batch_max_wait_minutes, **options)
    return get_embedder("openai", model, emb.dimensions, settings, batch_size=emb.batch_size,
                        price_per_million=price_per_million(model, emb), **options)


@dataclass(frozen=True)
class EmbedderChoice:
    """The embedder a run chose when it started, as recorded on the run and, later, on its snapshot.

    Every stage and every task of the run embeds, counts tokens and records
    with this one, even if the environment changes between tasks.
    """

    provider: str
    model: str
    dimensions: int
    tokenizer: str
    max_tokens: int
    base_url: str | None = None     # the OpenAI-compatible server, without user or password
    api_key_env: str | None = None  # the variable holding its key (a name, never a key)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EmbedderChoice":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def choose(emb: "EmbeddingSettings", settings: Settings) -> EmbedderChoice:
    """Choose a site's embedder once, for a new run (the tokenizer is looked up now, offline)."""
    from sitekb.tokenization import TokenizerUnavailableError, get_tokenizer

    embedder = embedder_for_site(emb, settings)
    try:
        tokenizer = get_tokenizer(embedder.provider, embedder.model).name
    except (ValueError, TokenizerUnavailableError) as exc:
        raise ConfigError(f"embedding model {embedder.model!r} cannot be used: {exc}") from exc
    return EmbedderChoice(
        provider=embedder.provider, model=embedder.model, dimensions=embedder.dimensions, tokenizer=tokenizer,
        max_tokens=embedder.max_tokens, base_url=without_credentials(getattr(embedder, "base_url", None)),
        api_key_env=emb.api_key_env if embedder.provider == "openai" else None,
    )


def embedder_for_run(emb: "EmbeddingSettings", choice: EmbedderChoice, settings: Settings) -> Embedder:
    """The embedder a run chose, with the site's request options (batch size, concurrency, budget prices).

    The server is the one the run recorded, whatever ``OPENAI_BASE_URL`` says on
    the worker running a later task: one run embeds with one server, the one its
    snapshot names. ``OPENAI_BASE_URL`` is used when it is that server (it may
    carry the user and password the record leaves out).
    """
    recorded = emb.model_copy(update={
        "provider": choice.provider, "model": choice.model,
        "dimensions": choice.dimensions if choice.provider == "openai" else None,
        "base_url": choice.base_url, "api_key_env": choice.api_key_env or emb.api_key_env,
    })
    if choice.provider == "openai":
        env_url = settings.openai_base_url
        same = env_url is not None and without_credentials(env_url) == choice.base_url
        if env_url is not None and not same:
            log.warning("OPENAI_BASE_URL here is %s, but the run chose %s when it started: embedding with the run's",
                        without_credentials(env_url), choice.base_url or "the OpenAI API")
        settings = settings.model_copy(update={"openai_base_url": env_url if same else None})
    return embedder_for_site(recorded, settings)


@functools.lru_cache(maxsize=8)
def _query_embedder(provider: str, model: str, dimensions: int, api_key: str | None, base_url: str | None,
                    local_options: tuple = ()):
    if provider != "openai":
        return LocalEmbedder(model, batch_size=LOCAL_BATCH_SIZE, **dict(local_options))
    return get_embedder(provider, model, dimensions, api_key=api_key, base_url=base_url)


def query_embedder(provider: str, model: str, dimensions: int, settings: Settings, *, base_url: str | None = None,
                   api_key_env: str | None = None) -> Embedder:
    """The embedder of questions asked of a snapshot: its model, resolved as when it was built (cached)."""
    if provider == "openai":
        api_key, server = openai_endpoint(settings, api_key_env, base_url)
        return _query_embedder(provider, model, dimensions, api_key, server)
    if provider != "local":
        raise ConfigError(f"unknown embedding provider {provider!r}: use 'local' or 'openai'")
    return _query_embedder(provider, model, dimensions, None, None,
                           tuple(sorted(local_runtime_options(settings).items())))


def openai_endpoint(settings: Settings, api_key_env: str | None, base_url: str | None) -> tuple[str | None, str | None]:
    """The key and server of an OpenAI-compatible embedder, for building a snapshot or querying one.

    Key: the variable ``api_key_env`` names if it is set, else ``OPENAI_API_KEY``
    (CLI, environment or the Airflow connection, through Settings). Server:
    ``OPENAI_BASE_URL`` (environment or CLI) over ``base_url`` (site config, or
    what a snapshot recorded).
    """
    api_key = settings.openai_api_key
    if api_key_env and api_key_env != "OPENAI_API_KEY":
        api_key = settings.secret(api_key_env) or api_key
    return api_key, settings.openai_base_url or base_url


def price_per_million(model: str, emb: "EmbeddingSettings | None" = None) -> float:
    """USD per million tokens for `model`: the site's price if it sets one, else the list price, else 0."""
    if emb is not None and model in emb.prices_usd_per_million:
        return emb.prices_usd_per_million[model]
    return PRICE_PER_MILLION_TOKENS.get(model, 0.0)


# -- cost -------------------------------------------------------------------------------

def estimate_cost(conn: psycopg.Connection, run_id: str, embedder: Embedder) -> dict:
    """Texts and tokens the cache lacks for this run, what embedding them would cost, and the spend so far."""
    texts, tokens = cache.missing_totals(conn, run_id, embedder.model, embedder.dimensions)
    price = _price(embedder)
    return {"texts_to_embed": texts, "tokens_to_embed": tokens,
            "estimated_usd": round(tokens * price / 1_000_000, 6), "price_per_million_usd": price,
            "spent_usd": cache.run_spend(conn, run_id)["usd"]}


def _price(embedder: Embedder) -> float:
    return 0.0 if embedder.provider == "local" else float(getattr(embedder, "price_per_million", 0.0) or 0.0)


def check_budget(estimate: dict, budget_usd: float | None) -> None:
    """Raise BudgetExceeded if this run's spend so far plus the estimate would pass its budget."""
    if budget_usd is None:
        return
    total = estimate.get("spent_usd", 0.0) + estimate["estimated_usd"]
    if total > budget_usd + 1e-9:
        spent = estimate.get("spent_usd", 0.0)
        raise BudgetExceeded(
            f"embedding {estimate['texts_to_embed']} texts ({estimate['tokens_to_embed']} tokens) would cost "
            f"${estimate['estimated_usd']:.4f}"
            + (f" on top of ${spent:.4f} already spent by this run" if spent else "")
            + f", above the run's budget of ${budget_usd:.4f} (site config embedding.budget_usd). "
            "Nothing more was embedded. Raise the budget, narrow the crawl, or pick a cheaper model; "
            "everything embedded so far stays cached."
        )


# -- embedding a run ---------------------------------------------------------------------

@dataclass
class EmbedResult:
    total: int            # distinct texts of the run
    reused: int           # found in the cache
    embedded: int         # sent to the model by this call
    requests: int         # requests (or local forward batches) made by this call
    seconds: float
    tokens: int = 0       # tokens embedded by this call
    usd: float = 0.0      # what this call cost
    model_load_seconds: float = 0.0  # waiting for a local model to load (part of `seconds`)

    @property
    def texts_per_second(self) -> float:
        busy = self.seconds - self.model_load_seconds
        return round(self.embedded / busy, 1) if busy > 0 and self.embedded else 0.0


class _InlineExecutor:
    """An executor that runs each call at once in the calling thread (for one request at a time)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future

    def __enter__(self) -> "_InlineExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _embed_batch(embedder: Embedder, texts: list[str], counts: list[int]) -> tuple[np.ndarray, int | None]:
    with_usage = getattr(embedder, "embed_with_usage", None)
    if with_usage is not None:
        return with_usage(texts, counts)
    return embedder.embed(texts), None


def check_input_lengths(todo: list[tuple[bytes, str, int]], embedder: Embedder, run_id: str) -> None:
    """Refuse texts longer than the model accepts (chunked for another model) before any request."""
    too_long = [count for _, _, count in todo if count > embedder.max_tokens]
    if too_long:
        raise ConfigError(
            f"{len(too_long)} chunks of run {run_id} have more tokens (up to {max(too_long)}) than "
            f"{embedder.model} accepts ({embedder.max_tokens}); they were chunked for another model. "
            "Run the chunk stage again with this embedding config."
        )


def embed_run(conn: psycopg.Connection, run_id: str, embedder: Embedder, batch_size: int | None = None, *,
              budget_usd: float | None = None, progress: Callable[[int, int], None] | None = None,
              shard: tuple[int, int] | None = None) -> EmbedResult:
    """Embed every distinct text of the run that the cache lacks; commit each request's vectors as it returns.

    ``shard=(i, n)``: only part ``i`` of ``n`` of those texts (one mapped
    Airflow task's share, :func:`sitekb.store.embeddings.shard_condition`).

    Up to ``embedder.concurrency`` requests are in flight. If one fails, the
    others in flight are still awaited and stored (they are paid for), then
    the error is raised. With a budget, no request is sent that would take
    the run's spend past it (BudgetExceeded). Progress is logged every ten
    seconds, and ``progress(done, total)`` hears of every stored request.
    """
    started = time.monotonic()
    total = cache.distinct_texts(conn, run_id)
    todo = cache.missing_texts(conn, run_id, embedder.model, embedder.dimensions, shard=shard)
    result = EmbedResult(total=total, reused=total - len(todo) if shard is None else 0, embedded=0, requests=0,
                         seconds=0.0)
    if not todo:
        result.seconds = time.monotonic() - started
        return result
    check_input_lengths(todo, embedder, run_id)
    warm = getattr(embedder, "warm", None)
    if warm is not None:
        result.model_load_seconds = warm()
    max_inputs = min(batch_size or embedder.max_batch_inputs, embedder.max_batch_inputs)
    batches = pack_batches([count for _, _, count in todo], max_inputs, embedder.max_batch_tokens)
    price = _price(embedder)
    spent = cache.run_spend(conn, run_id)["usd"] if budget_usd is not None else 0.0
    reserved = 0.0  # cost of requests in flight
    last_log = time.monotonic()

    def cost(tokens: int) -> float:
        return tokens * price / 1_000_000

    def store(batch: range, vectors: np.ndarray, billed: int | None) -> None:
        nonlocal spent, last_log
        tokens = billed if billed is not None else sum(todo[i][2] for i in batch)
        cache.store_vectors(conn, embedder.model, embedder.dimensions, [todo[i][0] for i in batch], vectors,
                            spend=cache.Spend(run_id, embedder.provider, tokens, cost(tokens)))
        spent += cost(tokens)
        result.embedded += len(batch)
        result.requests += 1
        result.tokens += tokens
        result.usd += cost(tokens)
        if progress is not None:
            progress(result.embedded, len(todo))
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            log.info("embedding: %d/%d texts done (%d requests)", result.embedded, len(todo), result.requests)

    def affordable(batch: range) -> bool:
        if budget_usd is None:
            return True
        return spent + reserved + cost(sum(todo[i][2] for i in batch)) <= budget_usd + 1e-9

    def over_budget(batch: range) -> BudgetExceeded:
        left = len(todo) - result.embedded
        return BudgetExceeded(
            f"stopped before a request of {len(batch)} texts that would take run {run_id} past its embedding "
            f"budget of ${budget_usd:.4f} (spent ${spent:.4f}); {left} texts are still missing. "
            "Raise embedding.budget_usd and run again: what was embedded stays cached."
        )

    pending = iter(batches)
    # One at a time (a local model): run in this thread, where torch's thread pool already lives.
    pool = (ThreadPoolExecutor(max_workers=embedder.concurrency, thread_name_prefix="sitekb-embed")
            if embedder.concurrency > 1 else _InlineExecutor())
    with pool:
        in_flight: dict[Future, range] = {}
        error: BaseException | None = None
        while True:
            while error is None and len(in_flight) < max(1, embedder.concurrency):
                batch = next(pending, None)
                if batch is None:
                    break
                if not affordable(batch):
                    error = over_budget(batch)
                    break
                reserved += cost(sum(todo[i][2] for i in batch))
                texts = [todo[i][1] for i in batch]
                counts = [todo[i][2] for i in batch]
                in_flight[pool.submit(_embed_batch, embedder, texts, counts)] = batch
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                batch = in_flight.pop(future)
                reserved -= cost(sum(todo[i][2] for i in batch))
                try:
                    vectors, billed = future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after storing what is paid for
                    error = error or exc
                    continue
                store(batch, vectors, billed)
        if error is not None:
            raise error
    result.seconds = time.monotonic() - started
    result.usd = round(result.usd, 6)
    return result
