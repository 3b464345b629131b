"""OpenAI's Batch API for large runs: the same embeddings at half the price, within 24 hours.

Owns :class:`OpenAIBatchEmbedder`, an :class:`~sitekb.providers.openai_api.OpenAIEmbedder`
that turns one group of texts into one Batch job (a JSONL file of
``/v1/embeddings`` requests, each packed to the API limits) and reads the
vectors back. The job's life is a few public steps, none of which sleeps, so a
caller may spread them over processes and hours:

1. :meth:`~OpenAIBatchEmbedder.submit_job`: find the job of these exact texts
   (:meth:`~OpenAIBatchEmbedder.find_job`), or submit it (:meth:`~OpenAIBatchEmbedder.new_job`);
2. :meth:`~OpenAIBatchEmbedder.check_job`: look at its status once;
3. :meth:`~OpenAIBatchEmbedder.collect`: read a finished job's vectors (a :class:`JobOutput`);
4. :meth:`~OpenAIBatchEmbedder.resend`: send the lines it left undone through the synchronous endpoint.

The Airflow corner drives them from a deferrable operator
(:mod:`sitekb.orchestration.batch`), waiting in the triggerer and holding no
worker slot. :meth:`~OpenAIBatchEmbedder.embed_with_usage` chains them with a
polling wait for the CLI and the local engine (a plain process), so that
:func:`sitekb.embedding.embed_run` drives this embedder exactly like the
synchronous one and commits each job's vectors to the cache when it completes.

Paying nothing twice across retries: every job carries a key in its metadata
(``sitekb_job``: a hash of the model, dimensions and the exact texts). Before
submitting, the embedder looks for a recent job with that key and takes it up
instead, so a task killed while a job runs picks the same job up when retried.
Lines of a finished job that failed (or were left undone by an expired or
cancelled job) are sent through the synchronous endpoint: only they pay full
price (:attr:`~OpenAIBatchEmbedder.sync_price_per_million`). A job that failed
validation is a terminal :class:`~sitekb.errors.SitekbError`; a malformed
output is a :class:`~sitekb.errors.TransientError`. Waiting in
:meth:`~OpenAIBatchEmbedder.wait` longer than ``batch_max_wait_minutes`` is a
TransientError too: a retry resumes the wait.

Settings read: the site config's ``embedding.batch_api``,
``embedding.batch_poll_seconds`` and ``embedding.batch_max_wait_minutes``
(through :func:`sitekb.embedding.embedder_for_site`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from sitekb.errors import SitekbError, TransientError
from sitekb.providers.base import pack_batches
from sitekb.providers.openai_api import MAX_INPUTS, MAX_REQUEST_TOKENS, OpenAIEmbedder

log = logging.getLogger(__name__)

BATCH_DISCOUNT = 0.5        # the Batch API costs half the synchronous price
JOB_INPUTS = 50_000         # texts per job (the API allows 50,000 requests and 200 MB per file)
FIND_WINDOW_SECONDS = 26 * 3600  # jobs older than their 24 h window plus a margin are not reused
LIVE = ("validating", "in_progress", "finalizing", "completed")
DONE = ("completed", "expired", "cancelled")  # finished: what ran can be read, the rest is resent
_REUSABLE = LIVE + ("expired", "cancelled", "cancelling")


@dataclass(frozen=True)
class BatchJob:
    """One Batch API job as sitekb refers to it: small enough for XCom and a trigger's kwargs."""

    batch_id: str
    key: str                   # ``sitekb_job``: the hash of the model, dimensions and exact texts
    status: str
    reason: str | None = None  # why it failed validation

    @property
    def done(self) -> bool:
        """Finished, so that its output can be read (completed, expired or cancelled)."""
        return self.status in DONE

    @property
    def failed(self) -> bool:
        """Rejected by validation: nothing ran and nothing will."""
        return self.status == "failed"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BatchJob":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def job_from_batch(batch: Any) -> BatchJob:
    """The :class:`BatchJob` of an ``openai`` Batch object (from the sync or the async client)."""
    reason = None
    if batch.status == "failed":
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        reason = "; ".join(e.message or e.code or "" for e in errors) or "no reason given"
    return BatchJob(batch.id, (batch.metadata or {}).get("sitekb_job", ""), batch.status, reason)


def failure_message(job: BatchJob) -> str:
    """What to say about a job that failed validation."""
    return (f"OpenAI batch {job.batch_id} failed validation: {job.reason or 'no reason given'}. "
            "Nothing was charged; fix the cause (model, dimensions, inputs) and run the task again")


@dataclass
class JobOutput:
    """What a finished job returned, row for row with its texts."""

    batch_id: str
    texts: list[str]
    vectors: np.ndarray            # zeros where a line is missing
    tokens: int                    # billed by the job, at the batch price
    lines: list[range]             # the job's request lines, as ranges of texts
    missing: list[int]             # lines that failed or never ran (an expired or cancelled job)
    token_counts: list[int] | None = None
    resent_tokens: int = 0         # billed for missing lines through the synchronous endpoint, full price
    resent: int = 0                # texts resent
    done_rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.done_rows = np.ones(len(self.texts), dtype=bool)
        for line in self.missing:
            self.done_rows[self.lines[line].start : self.lines[line].stop] = False

    def missing_texts(self) -> list[str]:
        return [text for text, done in zip(self.texts, self.done_rows) if not done]


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
        self.max_batch_inputs = max(1, min(job_inputs, JOB_INPUTS))
        self.max_batch_tokens = None
        self.jobs_submitted = 0

    @property
    def sync_price_per_million(self) -> float:
        """What a line resent through the synchronous endpoint costs per million tokens (the full price)."""
        return self.price_per_million / BATCH_DISCOUNT

    def job_key(self, texts: Sequence[str]) -> str:
        """The job's idempotency key: the same model, dimensions and texts always give the same key."""
        digest = hashlib.sha256(f"{self.model}\x00{self.dimensions}".encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        return digest.hexdigest()[:40]

    def job_ranges(self, total: int) -> list[range]:
        """How ``total`` texts are split into jobs: consecutive ranges of at most ``max_batch_inputs``."""
        return [range(start, min(start + self.max_batch_inputs, total))
                for start in range(0, total, self.max_batch_inputs)]

    # -- the polling path (CLI, local engine) ----------------------------------------

    def embed_with_usage(self, texts: Sequence[str],
                         token_counts: Sequence[int] | None = None) -> tuple[np.ndarray, int | None]:
        """Vectors of `texts` from one Batch job (found again if it already exists), and the tokens billed.

        Waits for the job in this process: for a plain process such as the
        CLI. An Airflow task defers instead (:mod:`sitekb.orchestration.batch`).
        """
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        counts = list(token_counts) if token_counts is not None else self.count_tokens(texts)
        job = self.wait(self.submit_job(texts, counts))
        output = self.resend(self.collect(job, texts, counts))
        return output.vectors, output.tokens + output.resent_tokens

    def wait(self, job: BatchJob) -> BatchJob:
        """Poll until the job is done (``time.sleep`` between looks); TransientError after ``max_wait_seconds``."""
        started = time.monotonic()
        while not job.done:
            if job.failed:
                raise SitekbError(failure_message(job))
            if time.monotonic() - started > self.max_wait_seconds:
                raise TransientError(
                    f"OpenAI batch {job.batch_id} is still {job.status} after {self.max_wait_seconds / 60:.0f} min; "
                    "retry the task: it waits for the same batch and pays nothing twice"
                )
            time.sleep(self.poll_seconds)
            job = self.check_job(job.batch_id)
        return job

    # -- the steps ------------------------------------------------------------------

    def submit_job(self, texts: Sequence[str], token_counts: Sequence[int] | None = None) -> BatchJob:
        """The job of exactly these texts: a recent one with their key if there is one, else a new one."""
        key = self.job_key(texts)
        found = self.find_job(key)
        if found is not None:
            log.info("OpenAI batch %s (%s) already holds these %d texts: taken up, not submitted again",
                     found.batch_id, found.status, len(texts))
            return found
        return self.new_job(texts, token_counts)

    def new_job(self, texts: Sequence[str], token_counts: Sequence[int] | None = None) -> BatchJob:
        """Submit a job of these texts (a caller that looked for one with :meth:`find_job` already)."""
        counts = list(token_counts) if token_counts is not None else self.count_tokens(texts)
        lines = self._lines(counts)
        job = job_from_batch(self._submit(self.job_key(texts), texts, lines))
        log.info("submitted OpenAI batch %s: %d texts in %d requests (%s)", job.batch_id, len(texts), len(lines),
                 self.model)
        return job

    def find_job(self, key: str) -> BatchJob | None:
        """The newest job of the last ``FIND_WINDOW_SECONDS`` with this key that can still give vectors."""
        return self.find_jobs([key]).get(key)

    def find_jobs(self, keys: Sequence[str]) -> dict[str, BatchJob]:
        """:meth:`find_job` for several keys, in one pass over the job list: {key: job} of those found."""
        wanted, found = set(keys), {}
        oldest = time.time() - FIND_WINDOW_SECONDS
        for batch in self._client().batches.list(limit=100):  # newest first; the client pages on
            if (batch.created_at or 0) < oldest or len(found) == len(wanted):
                break
            key = (batch.metadata or {}).get("sitekb_job")
            if key in wanted and key not in found and batch.status in _REUSABLE:
                found[key] = job_from_batch(batch)
        return found

    def check_job(self, batch_id: str) -> BatchJob:
        """The job's status now (one request)."""
        return job_from_batch(self._client().batches.retrieve(batch_id))

    def collect(self, job: BatchJob | str, texts: Sequence[str] | None = None,
                token_counts: Sequence[int] | None = None) -> JobOutput:
        """The vectors of a finished job, row for row with its texts; lines it left undone are listed, not sent.

        ``texts`` are the texts the job was submitted with, if the caller still
        knows them (their key is checked); otherwise they are read back from the
        job's input file. Raises SitekbError if the job failed validation and
        TransientError if it is not done yet or its output is malformed.
        """
        batch = self._client().batches.retrieve(job if isinstance(job, str) else job.batch_id)
        state = job_from_batch(batch)
        if state.failed:
            raise SitekbError(failure_message(state))
        if not state.done:
            raise TransientError(f"OpenAI batch {state.batch_id} is still {state.status}: collect it when done")
        counts: list[int] | None = None
        if texts is not None and self.job_key(texts) == state.key:
            texts = list(texts)
            counts = list(token_counts) if token_counts is not None else self.count_tokens(texts)
            lines = self._lines(counts)
        else:
            texts, lines = self._job_input(batch, state.key)
        vectors, billed, missing = self._collect(batch, state.key, len(texts), lines)
        if missing:
            log.info("OpenAI batch %s (%s) left %d of %d requests undone", state.batch_id, state.status,
                     len(missing), len(lines))
        return JobOutput(state.batch_id, list(texts), vectors, billed, lines, missing, counts)

    def missing_tokens(self, output: JobOutput) -> int:
        """Tokens of the lines a job left undone (what :meth:`resend` would send)."""
        if not output.missing:
            return 0
        counts = output.token_counts if output.token_counts is not None else self.count_tokens(output.texts)
        return sum(counts[i] for i in range(len(output.texts)) if not output.done_rows[i])

    def resend(self, output: JobOutput) -> JobOutput:
        """Embed the lines the job left undone through the synchronous endpoint (full price), in place."""
        counts = output.token_counts
        for line in output.missing:
            part = output.lines[line]
            sync_vectors, sync_billed = self._request([output.texts[i] for i in part])
            output.vectors[part.start : part.stop] = sync_vectors
            if sync_billed is None:
                counts = counts if counts is not None else self.count_tokens(output.texts)
                sync_billed = sum(counts[i] for i in part)
            output.resent_tokens += sync_billed
            output.resent += len(part)
            output.done_rows[part.start : part.stop] = True
        if output.missing:
            log.info("resent %d texts of OpenAI batch %s through the synchronous endpoint", output.resent,
                     output.batch_id)
        output.missing = []
        return output

    # -- the job's files --------------------------------------------------------------

    def _lines(self, counts: Sequence[int]) -> list[range]:
        return pack_batches(counts, min(self.MAX_INPUTS, MAX_INPUTS), MAX_REQUEST_TOKENS)

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

    def _job_input(self, batch, key: str) -> tuple[list[str], list[range]]:
        """The texts a job was submitted with, and its lines, read back from its input file."""
        content = self._client().files.content(batch.input_file_id).read().decode("utf-8")
        by_line: dict[int, list[str]] = {}
        try:
            for raw in content.splitlines():
                if raw.strip():
                    record = json.loads(raw)
                    by_line[int(str(record["custom_id"]).removeprefix(f"{key}-"))] = list(record["body"]["input"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"OpenAI batch {batch.id} has a malformed input file: {exc}") from exc
        if sorted(by_line) != list(range(len(by_line))):
            raise TransientError(f"OpenAI batch {batch.id} has an input file with missing lines")
        texts: list[str] = []
        lines: list[range] = []
        for n in range(len(by_line)):
            lines.append(range(len(texts), len(texts) + len(by_line[n])))
            texts.extend(by_line[n])
        if self.job_key(texts) != key:
            raise SitekbError(f"OpenAI batch {batch.id} was not submitted by this embedder "
                              f"({self.model}, {self.dimensions} dimensions): its texts do not match its key")
        return texts, lines

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
                        continue  # resent synchronously
                    body = response["body"]
                    rows = self._decode(body["data"], len(lines[line]), batch.id)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
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
