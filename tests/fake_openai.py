"""An OpenAI-compatible embeddings server for tests, on 127.0.0.1 (stdlib only).

``POST /v1/embeddings`` answers like OpenAI's endpoint: it enforces the real
limits (at most 2,048 inputs and 300,000 tokens per request, 8,191 tokens per
input, counted with cl100k as OpenAI does), honours ``dimensions`` and
``encoding_format`` (``float`` or ``base64``), and reports ``usage``.

Vectors are deterministic and derived from hashes: each lower-cased word of an
input is hashed to a few signed positions (feature hashing) and the sum is
normalised. The same text always gets the same vector, and texts that share
words are close, so a search against a snapshot built here finds sensible
passages without any model.

The server counts requests, inputs and tokens, and can be told how to answer
the next requests: ``429`` (with ``Retry-After``), ``500``, ``slow`` (answer
after a delay), ``malformed`` (a 200 whose body is not a valid embeddings
response), ``wrong_count`` (one vector too few), ``wrong_dimensions`` (vectors
one element too long), ``nan`` (vectors holding NaN), ``stall`` (hold the
request until the server stops) or ``hold`` (hold the request until
:meth:`FakeOpenAI.release`, then answer normally; :attr:`FakeOpenAI.holding`
is set while one waits, so a test can act in the middle of a request).
:meth:`FakeOpenAI.always` answers every request without a queued behaviour
with one (a server that keeps failing). Use::

    with FakeOpenAI() as server:
        server.queue("429", retry_after=0.2)
        ... OpenAI(base_url=server.base_url, api_key="test") ...
        assert server.stats.requests == 2

It also speaks enough of the Batch API for :mod:`sitekb.openai_batch`:
``POST /v1/files`` (multipart upload), ``POST /v1/batches`` (the job runs at
once, its lines answered like ``/v1/embeddings``), ``GET /v1/batches[/{id}]``
(``in_progress`` for the first ``batch_polls`` looks, then ``completed``) and
``GET /v1/files/{id}/content``; ``fail_batch_lines`` makes chosen lines fail,
``fail_batch_validation = "reason"`` makes the next jobs fail validation, and
``malformed_batch_output`` gives the next jobs an output file that is not JSONL.
With ``api_key`` set, the Batch API endpoints want that key too.

``python -m tests.fake_openai --port 8099`` serves it by hand.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import itertools
import hashlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
MAX_INPUT_TOKENS = 8191
NATIVE_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
DEFAULT_DIMENSIONS = 1536
BEHAVIOURS = ("ok", "429", "500", "slow", "malformed", "wrong_count", "wrong_dimensions", "nan", "stall", "hold")

_WORD = re.compile(r"\w+")


@dataclass
class Request:
    """One request the server saw."""

    status: int
    behaviour: str
    inputs: int
    tokens: int
    model: str | None
    dimensions: int | None
    started: float
    finished: float


@dataclass
class Stats:
    """What the server has seen since the last reset."""

    requests: int = 0            # every POST /v1/embeddings, whatever the answer
    ok_requests: int = 0         # answered 200 with vectors
    inputs: int = 0              # inputs embedded (200 answers only)
    tokens: int = 0              # tokens embedded (200 answers only)
    texts: list[str] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)
    batch_jobs: int = 0          # Batch API jobs created
    batch_inputs: int = 0        # inputs embedded through Batch API jobs
    batch_texts: list[str] = field(default_factory=list)
    batch_looks: int = 0         # GET /v1/batches/{id}


def fake_vector(text: str, dimensions: int, model: str = "") -> np.ndarray:
    """The deterministic unit vector the server returns for `text` (exposed for assertions)."""
    vector = np.zeros(dimensions, dtype=np.float32)
    words = _WORD.findall(text.lower()) or [text]
    for word in words:
        digest = hashlib.blake2b(f"{model}\x00{word}".encode(), digest_size=16).digest()
        for k in range(0, 12, 4):  # three signed positions per word
            value = int.from_bytes(digest[k : k + 4], "little")
            vector[value % dimensions] += 1.0 if value & 0x8000_0000 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        vector[int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") % dimensions] = 1.0
        return vector
    return vector / norm


class FakeOpenAI:
    """The server; start with ``with FakeOpenAI() as s`` or ``start()``/``stop()``."""

    def __init__(self, port: int = 0, *, api_key: str | None = None) -> None:
        self._port = port
        self.api_key = api_key  # when set, a request without this bearer token gets 401
        self.stats = Stats()
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, dict]] = deque()
        self._always: tuple[str, dict] = ("ok", {})
        self._stopping = threading.Event()
        self.holding = threading.Event()     # set while a "hold" request waits for release()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tokenizer = None
        self._ids = itertools.count(1)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls = 1                 # looks at a job that answer in_progress before completed
        self.fail_batch_lines: set[int] = set()
        self.fail_batch_validation: str | None = None  # jobs created while set fail validation with this reason
        self.malformed_batch_output = False            # jobs created while set get an output that is not JSONL

    # -- control -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def queue(self, behaviour: str, count: int = 1, *, retry_after: float | None = 1.0, delay: float = 1.0,
              body: bytes | None = None) -> None:
        """Answer the next `count` requests (after those already queued) with `behaviour`."""
        options = self._options(behaviour, retry_after, delay, body)
        with self._lock:
            for _ in range(count):
                self._queue.append((behaviour, options))

    def always(self, behaviour: str, *, retry_after: float | None = 1.0, delay: float = 1.0,
               body: bytes | None = None) -> None:
        """Answer every request that finds the queue empty with `behaviour` (until reset or ``always("ok")``)."""
        options = self._options(behaviour, retry_after, delay, body)
        with self._lock:
            self._always = (behaviour, options)

    def release(self) -> None:
        """Let the requests held by ``hold`` (and later ones) answer."""
        self._released.set()

    @staticmethod
    def _options(behaviour: str, retry_after: float | None, delay: float, body: bytes | None) -> dict:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; use one of {BEHAVIOURS}")
        return {"retry_after": retry_after, "delay": delay, "body": body}

    def reset(self) -> None:
        """Forget counts and queued behaviours."""
        with self._lock:
            self.stats = Stats()
            self._queue.clear()
            self._always = ("ok", {})
            self.holding.clear()
            self._released.clear()
            self.files.clear()
            self.batches.clear()
            self.batch_polls = 1
            self.fail_batch_lines = set()
            self.fail_batch_validation = None
            self.malformed_batch_output = False

    def start(self) -> "FakeOpenAI":
        from sitekb.tokenization import get_tokenizer

        self._tokenizer = get_tokenizer("openai", "text-embedding-3-small")
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases stalled requests
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ------------------------------------------------------

    def _next_behaviour(self) -> tuple[str, dict]:
        with self._lock:
            self.stats.requests += 1
            return self._queue.popleft() if self._queue else self._always

    def _record(self, request: Request, texts: list[str] | None = None) -> None:
        with self._lock:
            self.stats.log.append(request)
            if request.status == 200 and request.behaviour in ("ok", "slow", "hold"):
                self.stats.ok_requests += 1
                self.stats.inputs += request.inputs
                self.stats.tokens += request.tokens
                self.stats.texts.extend(texts or [])

    def handle(self, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        started = time.monotonic()
        behaviour, options = self._next_behaviour()
        status, extra_headers, body, meta = self._answer(headers, raw, behaviour, options)
        self._record(Request(status, behaviour, meta.get("inputs", 0), meta.get("tokens", 0), meta.get("model"),
                             meta.get("dimensions"), started, time.monotonic()), meta.get("texts"))
        return status, extra_headers, body

    def _answer(self, headers, raw, behaviour, options):
        meta: dict = {}
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, _error("Incorrect API key provided.", "invalid_api_key"), meta
        if behaviour == "429":
            retry = {} if options["retry_after"] is None else {"Retry-After": f"{options['retry_after']:g}"}
            return 429, retry, _error("Rate limit reached for requests.", "rate_limit_exceeded"), meta
        if behaviour == "500":
            return 500, {}, _error("The server had an error while processing your request.", "server_error"), meta
        if behaviour == "stall":
            self._stopping.wait()
            return 503, {}, _error("server stopping", "server_error"), meta
        if behaviour == "slow":
            if self._stopping.wait(options["delay"]):
                return 503, {}, _error("server stopping", "server_error"), meta
        if behaviour == "hold":
            self.holding.set()
            while not self._released.wait(0.05):
                if self._stopping.is_set():
                    return 503, {}, _error("server stopping", "server_error"), meta
        if behaviour == "malformed":
            return 200, {}, options.get("body") or b'{"object": "list", "data": [{"embedding": [0.1, ', meta
        try:
            payload = json.loads(raw)
        except ValueError:
            return 400, {}, _error("We could not parse the JSON body of your request.", "invalid_json"), meta
        model = payload.get("model")
        inputs = payload.get("input")
        dimensions = payload.get("dimensions")
        meta.update(model=model, dimensions=dimensions)
        if isinstance(inputs, str):
            inputs = [inputs]
        if not model:
            return 400, {}, _error("you must provide a model parameter", "invalid_request_error"), meta
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return 400, {}, _error("'input' must be a string or a non-empty array of strings", "invalid_request_error"), meta
        if len(inputs) > MAX_INPUTS:
            return 400, {}, _error(f"'input' must have at most {MAX_INPUTS} elements, got {len(inputs)}", "invalid_request_error"), meta
        counts = [self._tokenizer.count(t) for t in inputs]
        meta.update(inputs=len(inputs), tokens=sum(counts), texts=list(inputs))
        if any(t == "" for t in inputs):
            return 400, {}, _error("'input' cannot contain an empty string", "invalid_request_error"), meta
        if max(counts) > MAX_INPUT_TOKENS:
            return 400, {}, _error(f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
                                   f"requested {max(counts)} tokens", "invalid_request_error"), meta
        if sum(counts) > MAX_REQUEST_TOKENS:
            return 400, {}, _error(f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                                   "max_tokens_per_request"), meta
        native = NATIVE_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
        if dimensions is not None and (not isinstance(dimensions, int) or not 1 <= dimensions <= native):
            return 400, {}, _error(f"dimensions must be between 1 and {native}", "invalid_request_error"), meta
        dims = dimensions or native
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text, dims, model)
            if behaviour == "wrong_dimensions":
                vector = np.append(vector, np.float32(0.0))
            elif behaviour == "nan":
                vector = np.full(dims, np.nan, dtype=np.float32)
            embedding = base64.b64encode(vector.astype("<f4").tobytes()).decode() if as_base64 else vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        if behaviour == "wrong_count":
            data = data[:-1]
        body = {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}}
        return 200, {}, json.dumps(body).encode(), meta


    # -- Batch API ----------------------------------------------------------------

    def upload(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        message = email.parser.BytesParser().parsebytes(
            f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode() + raw)
        parts = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
        if "file" not in parts:
            return 400, _error("'file' is required", "invalid_request_error")
        content = parts["file"].get_payload(decode=True)
        with self._lock:
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = content
        return 200, json.dumps({"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                "filename": parts["file"].get_filename() or "upload.jsonl", "purpose": "batch",
                                "status": "processed"}).encode()

    def create_batch(self, raw: bytes) -> tuple[int, bytes]:
        payload = json.loads(raw)
        content = self.files.get(payload.get("input_file_id"))
        if content is None or payload.get("endpoint") != "/v1/embeddings":
            return 400, _error("unknown input_file_id or unsupported endpoint", "invalid_request_error")
        output, completed, failed = [], 0, 0
        for n, line in enumerate(content.decode().splitlines()):
            request = json.loads(line)
            if n in self.fail_batch_lines:
                status, body = 500, json.loads(_error("batch line failed", "server_error"))
            else:
                status, _, answer, meta = self._answer({"authorization": f"Bearer {self.api_key}"},
                                                       json.dumps(request["body"]).encode(), "ok", {})
                body = json.loads(answer)
                if status == 200:
                    with self._lock:
                        self.stats.batch_inputs += meta["inputs"]
                        self.stats.batch_texts.extend(meta["texts"])
            completed, failed = completed + (status == 200), failed + (status != 200)
            output.append(json.dumps({"id": f"batch_req_{n}", "custom_id": request["custom_id"],
                                      "response": {"status_code": status, "request_id": f"req_{n}", "body": body},
                                      "error": None}))
        with self._lock:
            batch_id = f"batch_{next(self._ids)}"
            output_id = f"file-{next(self._ids)}"
            self.files[output_id] = ("\n".join(output) + "\n").encode()
            if self.malformed_batch_output:
                self.files[output_id] = b'{"custom_id": "x-0", "response": {"status_code": 200, "body": {"data": [\n'
            self.stats.batch_jobs += 1
            now = int(time.time())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": "/v1/embeddings", "errors": None,
                "input_file_id": payload["input_file_id"], "completion_window": "24h", "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": now, "expires_at": now + 86400,
                "request_counts": {"total": completed + failed, "completed": completed, "failed": failed},
                "metadata": payload.get("metadata"), "_output": output_id, "_looks": 0,
                "_fail": self.fail_batch_validation,
            }
            return 200, self._batch_json(batch_id, look=False)

    def _batch_json(self, batch_id: str, look: bool = True) -> bytes:
        batch = self.batches[batch_id]
        if look and batch.get("_fail"):
            self.stats.batch_looks += 1
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": batch["_fail"],
                                                           "param": None, "line": None}]}
        elif look:
            self.stats.batch_looks += 1
            batch["_looks"] += 1
            done = batch["_looks"] > self.batch_polls
            batch["status"] = "completed" if done else "in_progress"
            if done:
                batch["output_file_id"] = batch["_output"]
        return json.dumps({k: v for k, v in batch.items() if not k.startswith("_")}).encode()

    def authorized(self, headers: dict[str, str]) -> bool:
        """Whether a request carries the key the server wants (any, if it wants none)."""
        return not self.api_key or headers.get("authorization") == f"Bearer {self.api_key}"

    def get(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            parts = path.split("?")[0].strip("/").split("/")
            if parts[:2] == ["v1", "batches"] and len(parts) == 2:
                data = [json.loads(self._batch_json(b, look=False)) for b in reversed(self.batches)]
                return 200, json.dumps({"object": "list", "data": data, "has_more": False,
                                        "first_id": data[0]["id"] if data else None,
                                        "last_id": data[-1]["id"] if data else None}).encode()
            if parts[:2] == ["v1", "batches"] and len(parts) == 3 and parts[2] in self.batches:
                return 200, self._batch_json(parts[2])
            if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content" and parts[2] in self.files:
                return 200, self.files[parts[2]]
        return 404, _error(f"Invalid URL (GET {path})", "unknown_url")


def embedding_through(config, server: "FakeOpenAI", *, model: str = "text-embedding-3-small", dimensions: int = 64):
    """A site config (``sitekb.sites.SiteConfig``) that embeds through ``server``: an end-to-end run without a model."""
    return config.model_copy(update={"embedding": config.embedding.model_copy(update={
        "provider": "openai", "model": model, "dimensions": dimensions, "base_url": server.base_url})})


def use_environment(env, database_url: str, home) -> None:
    """What a run through the fake server needs in the environment (``env``: a pytest MonkeyPatch)."""
    env.setenv("OPENAI_API_KEY", "test")
    env.delenv("OPENAI_BASE_URL", raising=False)
    env.setenv("SITEKB_DATABASE_URL", database_url)
    env.setenv("SITEKB_HOME", str(home))


def _error(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/files", "/v1/batches") and not self.fake.authorized(headers):
            self._send(401, {}, _error("Incorrect API key provided.", "invalid_api_key"))
            return
        if path == "/v1/files":
            self._send_pair(self.fake.upload(headers, raw))
            return
        if path == "/v1/batches":
            self._send_pair(self.fake.create_batch(raw))
            return
        if path != "/v1/embeddings":
            self._send(404, {}, _error(f"Invalid URL (POST {self.path})", "unknown_url"))
            return
        status, headers, body = self.fake.handle(headers, raw)
        self._send(status, headers, body)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if not self.fake.authorized({k.lower(): v for k, v in self.headers.items()}):
            self._send(401, {}, _error("Incorrect API key provided.", "invalid_api_key"))
            return
        self._send_pair(self.fake.get(self.path))

    def _send_pair(self, answer: tuple[int, bytes]) -> None:
        self._send(answer[0], {}, answer[1])

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, killed): nothing to answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server signature)
        pass  # quiet: tests read the stats instead


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI embeddings API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    with FakeOpenAI(args.port) as server:
        print(f"fake OpenAI embeddings at {server.base_url} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


# -- pytest fixtures (import them into a test module to use them) ------------------

try:
    import pytest
except ImportError:  # used outside pytest: `python -m tests.fake_openai`
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def fake_openai_server():
        """One fake server for the module."""
        with FakeOpenAI() as server:
            yield server

    @pytest.fixture
    def fake_openai(fake_openai_server):
        """The module's fake server with counts and queued behaviours reset."""
        fake_openai_server.reset()
        yield fake_openai_server
        fake_openai_server.reset()


if __name__ == "__main__":
    main()
