"""OpenAI's Batch API for large runs: the same embeddings at half the price, within 24 hours.

Owns :class:`OpenAIBatchEmbedder`, an :class:`~sitekb.providers.openai_api.OpenAIEmbedder`
whose :meth:`embed_with_usage` turns one group of texts into one Batch job
(a JSONL file of ``/v1/embeddings`` requests, each packed to the API limits),
waits for it, and reads the vectors back. :func:`sitekb.embedding.embed_run`
drives it exactly like the synchronous provider and commits each job's
vectors to the cache when the job completes.

Paying nothing twice across retries: every job carries a key in its metadata
(``sitekb_job``: a hash of the model, dimensions and the exact texts). Before
submitting, the embedder looks for a recent job with that key and waits for it
instead, so a task killed while a job runs picks the same job up when retried.
Lines of a finished job that failed (or were left undone by an expired or
cancelled job) are sent through the synchronous endpoint: only they pay full
price. Waiting longer than ``batch_max_wait_minutes`` is a
:class:`~sitekb.errors.TransientError`; Airflow's retry resumes the wait.

Settings read: the site config's ``embedding.batch_api``,
``embedding.batch_poll_seconds`` and ``embedding.batch_max_wait_minutes``
(through :func:`sitekb.embedding.embedder_for_site`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Sequence

import numpy as np

from sitekb.errors import SitekbError, TransientError
from sitekb.providers.base import pack_batches
from sitekb.providers.openai_api import MAX_INPUTS, MAX_REQUEST_TOKENS, OpenAIEmbedder

BATCH_DISCOUNT = 0.5        # the Batch API costs half the synchronous price
JOB_INPUTS = 50_000         # texts per job (the API allows 50,000 requests and 200 MB per file)
FIND_WINDOW_SECONDS = 26 * 3600  # jobs older than their 24 h window plus a margin are not reused
_LIVE = ("validating", "in_progress", "finalizing", "completed")
_DONE = ("completed", "expired", "cancelled")


class OpenAIBatchEmbedder(OpenAIEmbedder):
    """Embeddings through OpenAI's Batch API (``/v1/batches``), half the synchronous price."""

    batch_api = True

    def __init__(self, *args, poll_seconds: float = 30.0, max_wait_minutes: float = 60.0,
                 job_inputs: int = JOB_INPUTS, **kwargs):
        super().__init__(*args, **kwargs)
        if kwargs.get("price_per_million") is None:
            self.price_per_million = self.price_per_million * BATCH_DISCOUNT
        self.poll_seconds = poll_seconds
        self.max_wait_seconds = max_wait_minutes * 60
        # embed_run hands over one job's worth of texts at a time; lines are packed below.
        self.max_batch_inputs = job_inputs
        self.max_batch_tokens = None
        self.jobs_submitted = 0

    def job_key(self, texts: Sequence[str]) -> str:
        digest = hashlib.sha256(f"{self.model}\x00{self.dimensions}".encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        return digest.hexdigest()[:40]

    def embed_with_usage(self, texts: Sequence[str],
                         token_counts: Sequence[int] | None = None) -> tuple[np.ndarray, int | None]:
        """Vectors of `texts` from one Batch job (found again if it already exists), and the tokens billed."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        counts = list(token_counts) if token_counts is not None else self.count_tokens(texts)
        lines = pack_batches(counts, min(self.MAX_INPUTS, MAX_INPUTS), MAX_REQUEST_TOKENS)
        key = self.job_key(texts)
        batch = self._find(key) or self._submit(key, texts, lines)
        batch = self._wait(batch)
        vectors, billed, missing = self._collect(batch, key, len(texts), lines)
        for line in missing:  # failed or never run: only these pay the synchronous price
            sync_vectors, sync_billed = self._request([texts[i] for i in lines[line]])
            vectors[lines[line].start : lines[line].stop] = sync_vectors
            billed += sync_billed if sync_billed is not None else sum(counts[i] for i in lines[line])
        return vectors, billed

    # -- the job -----------------------------------------------------------------

    def _find(self, key: str):
        client = self._client()
        oldest = time.time() - FIND_WINDOW_SECONDS
        for batch in client.batches.list(limit=100):  # newest first; the client pages on
            if (batch.created_at or 0) < oldest:
                break
            if (batch.metadata or {}).get("sitekb_job") == key and batch.status in _LIVE + ("expired", "cancelled"):
                return batch
        return None

    def _submit(self, key: str, texts: Sequence[str], lines: list[range]):
        client = self._client()
        body: dict = {"model": self.model, "encoding_format": "base64"}
        if self._send_dimensions:
            body["dimensions"] = self.dimensions
        jsonl = "".join(
            json.dumps({"custom_id": f"{key}-{n}", "method": "POST", "url": "/v1/embeddings",
                        "body": {**body, "input": [texts[i] for i in line]}}) + "\n"
            for n, line in enumerate(lines)
        ).encode("utf-8")
        upload = client.files.create(file=(f"sitekb-{key}.jsonl", jsonl, "application/jsonl"), purpose="batch")
        self.jobs_submitted += 1
        return client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h",
                                     metadata={"sitekb_job": key, "sitekb_model": self.model})

    def _wait(self, batch):
        client = self._client()
        started = time.monotonic()
        while batch.status not in _DONE:
            if batch.status in ("failed",):
                errors = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch.errors else ""
                raise SitekbError(f"OpenAI batch {batch.id} failed validation: {errors or 'no reason given'}")
            if time.monotonic() - started > self.max_wait_seconds:
                raise TransientError(
                    f"OpenAI batch {batch.id} is still {batch.status} after {self.max_wait_seconds / 60:.0f} min; "
                    "retry the task: it waits for the same batch and pays nothing twice"
                )
            time.sleep(self.poll_seconds)
            batch = client.batches.retrieve(batch.id)
        return batch

    def _collect(self, batch, key: str, total: int, lines: list[range]) -> tuple[np.ndarray, int, list[int]]:
        vectors = np.zeros((total, self.dimensions), dtype=np.float32)
        billed = 0
        done: set[int] = set()
        for file_id in filter(None, (batch.output_file_id,)):
            content = self._client().files.content(file_id).read().decode("utf-8")
            for raw in content.splitlines():
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    line = int(str(record["custom_id"]).removeprefix(f"{key}-"))
                    response = record.get("response") or {}
                    if response.get("status_code") != 200 or not 0 <= line < len(lines):
                        continue  # resent synchronously below
                    body = response["body"]
                    rows = self._decode(body["data"], len(lines[line]), batch.id)
                except (ValueError, KeyError, TypeError) as exc:
                    raise TransientError(f"OpenAI batch {batch.id} has a malformed output line: {exc}") from exc
                vectors[lines[line].start : lines[line].stop] = rows
                billed += int((body.get("usage") or {}).get("prompt_tokens") or 0)
                done.add(line)
        return vectors, billed, [n for n in range(len(lines)) if n not in done]

    def _decode(self, data: list, expected: int, batch_id: str) -> np.ndarray:
        if len(data) != expected:
            raise TransientError(f"OpenAI batch {batch_id} returned {len(data)} embeddings for {expected} inputs")
        out = np.empty((expected, self.dimensions), dtype=np.float32)
        for item in data:
            raw = item["embedding"]
            vector = (np.frombuffer(base64.b64decode(raw), dtype="<f4") if isinstance(raw, str)
                      else np.asarray(raw, dtype=np.float32))
            if vector.shape != (self.dimensions,):
                raise TransientError(f"OpenAI batch {batch_id} returned {vector.size}-dimensional vectors")
            out[int(item["index"])] = vector
        return out
