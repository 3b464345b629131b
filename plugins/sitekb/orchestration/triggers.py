"""Triggers of the sitekb DAGs: waiting in Airflow's triggerer, where a wait holds no worker slot.

Owns :class:`BatchJobTrigger`, which watches OpenAI Batch jobs
(:mod:`sitekb.providers.openai_batch`) with the ``openai`` package's async
client, one status request per job every ``poll_seconds``, and fires one
event when every job is done (completed, expired or cancelled) or one failed
validation. :class:`~sitekb.orchestration.batch.BatchEmbedShardOperator`
defers to it and reads the vectors when it fires.

A trigger's kwargs are stored in Airflow's metadata database, so they never
hold the API key: the trigger resolves it where it runs, like a task does
(:func:`sitekb.orchestration.settings.task_settings`): the variable the site
config names (``embedding.api_key_env``, else ``OPENAI_API_KEY``), else the
password of the Airflow connection ``sitekb_openai``. The base URL is
serialized without user and password; if ``OPENAI_BASE_URL`` or the
connection names the same server with credentials, those are used.

Settings read (in the triggerer): ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, the
variable ``api_key_env`` names, and the Airflow connection ``sitekb_openai``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from sitekb.embedding import openai_endpoint
from sitekb.orchestration.settings import OPENAI_CONNECTION_ID, openai_base_url
from sitekb.providers.openai_api import NO_KEY
from sitekb.providers.openai_batch import BatchJob, failure_message, job_from_batch
from sitekb.settings import Settings
from sitekb.store.snapshots import without_credentials

log = logging.getLogger(__name__)


class BatchJobTrigger(BaseTrigger):
    """Fires once when all of ``batch_ids`` are done, or one failed; the payload is small.

    Payload: ``{"status": "done", "jobs": [BatchJob.as_dict(), ...]}``;
    ``{"status": "failed", "message": ..., "jobs": [...]}`` when a job failed
    validation; ``{"status": "error", "message": ...}`` when the jobs cannot be
    watched (no key, a refused key, an unknown job). Lost connections, 429 and
    5xx answers are logged and retried at the next poll: a 24 h wait outlives
    a short outage.
    """

    def __init__(self, batch_ids: Sequence[str], *, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", poll_seconds: float = 30.0,
                 timeout_seconds: float = 60.0) -> None:
        super().__init__()
        self.batch_ids = list(batch_ids)
        self.base_url = without_credentials(base_url) or None
        self.api_key_env = api_key_env or "OPENAI_API_KEY"
        self.poll_seconds = float(poll_seconds)
        self.timeout_seconds = float(timeout_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "batch_ids": self.batch_ids, "base_url": self.base_url, "api_key_env": self.api_key_env,
            "poll_seconds": self.poll_seconds, "timeout_seconds": self.timeout_seconds,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import openai

        api_key, base_url = await self.endpoint()
        if not api_key and not base_url:
            yield TriggerEvent({"status": "error", "message": (
                f"no API key to watch OpenAI batches {', '.join(self.batch_ids)}: set {self.api_key_env} where "
                f"the triggerer runs, or the password of the Airflow connection '{OPENAI_CONNECTION_ID}'")})
            return
        where = base_url and without_credentials(base_url) or "the OpenAI API"
        client = openai.AsyncOpenAI(api_key=api_key or NO_KEY, base_url=base_url, timeout=self.timeout_seconds)
        jobs: dict[str, BatchJob] = {}
        try:
            while True:
                for batch_id in [b for b in self.batch_ids if b not in jobs or not jobs[b].done]:
                    try:
                        job = job_from_batch(await client.batches.retrieve(batch_id))
                    except (openai.APIConnectionError, openai.APIResponseValidationError) as exc:
                        log.warning("OpenAI batch %s: no status from %s (%s); asking again in %gs",
                                    batch_id, where, exc, self.poll_seconds)
                        continue
                    except openai.APIStatusError as exc:
                        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                            log.warning("OpenAI batch %s: %s answered %d; asking again in %gs",
                                        batch_id, where, exc.status_code, self.poll_seconds)
                            continue
                        yield TriggerEvent({"status": "error", "message": (
                            f"{where} answered {exc.status_code} about OpenAI batch {batch_id}: {exc.message}. "
                            f"Check the key ({self.api_key_env} or the connection '{OPENAI_CONNECTION_ID}') "
                            "and the base URL")})
                        return
                    if job.failed:
                        yield TriggerEvent({"status": "failed", "message": failure_message(job),
                                            "jobs": [job.as_dict()]})
                        return
                    if jobs.get(batch_id) is None or jobs[batch_id].status != job.status:
                        log.info("OpenAI batch %s is %s", batch_id, job.status)
                    jobs[batch_id] = job
                if all(b in jobs and jobs[b].done for b in self.batch_ids):
                    yield TriggerEvent({"status": "done", "jobs": [jobs[b].as_dict() for b in self.batch_ids]})
                    return
                await asyncio.sleep(self.poll_seconds)
        finally:
            await client.close()

    async def endpoint(self) -> tuple[str | None, str | None]:
        """(API key, base URL) here: the environment first, then the Airflow connection ``sitekb_openai``."""
        settings = Settings.from_env()
        api_key, env_url = openai_endpoint(settings, self.api_key_env, None)
        candidates = [env_url]
        if not api_key or (self.base_url and without_credentials(env_url) != self.base_url):
            connection = await _openai_connection()
            if connection is not None:
                api_key = api_key or connection.password or None
                # The helper reads extra_dejson, which masks it through the supervisor: off the event loop.
                candidates.append(await asyncio.to_thread(openai_base_url, connection))
        # The server the task chose (recorded without credentials); a URL here that names it may add them.
        base_url = next((url for url in candidates if url and without_credentials(url) == self.base_url),
                        self.base_url)
        return api_key, base_url


async def _openai_connection() -> Connection | None:
    try:
        return await Connection.async_get(OPENAI_CONNECTION_ID)
    except AirflowNotFoundException:
        return None
