"""The two kinds of error sitekb raises.

A *terminal* error (:class:`SitekbError` and its subclasses other than
:class:`TransientError`) means retrying cannot help: bad config, a quality gate
that failed, a database that is not there. Its message says what to do. The
Airflow corner turns it into a failure without retry.

A :class:`TransientError` (HTTP 429, a lost connection) may succeed on retry.

Exit codes of the CLI: 1 other, 2 config, 3 database, 4 crawl, 5 quality
gate, 6 budget, 7 not found, 8 query embedding unavailable, 9 run in
progress, 10 the run's embedding server failed (it kept failing after its
retries, :class:`EmbeddingServiceUnavailable`, or answered something that is
not embeddings, :class:`EmbeddingServiceFailed`); 64 a wrong command line
(argparse's usage errors, :data:`sitekb.cli.USAGE_EXIT`).
"""


class SitekbError(Exception):
    """A terminal error with an actionable message."""

    exit_code = 1
    # Set by the local engine when a stage of a run raised it (the CLI names them after the message).
    run_id: str | None = None
    stage: str | None = None


class ConfigError(SitekbError):
    """A site config or setting is wrong."""

    exit_code = 2


class DatabaseUnavailable(SitekbError):
    """The database cannot be reached."""

    exit_code = 3


class CrawlFailed(SitekbError):
    """The crawl produced nothing usable (dead site, unreachable start URL)."""

    exit_code = 4


class QualityGateFailed(SitekbError):
    """The batch failed the quality or golden-question gate; nothing was published."""

    exit_code = 5


class BudgetExceeded(SitekbError):
    """Embedding the remaining text would cost more than the configured budget."""

    exit_code = 6


class NotFound(SitekbError):
    """A snapshot, alias or site that was asked for does not exist."""

    exit_code = 7


class EmbeddingUnavailable(SitekbError):
    """A question cannot be embedded now with the model of the snapshot it asks (its server is down or refuses)."""

    exit_code = 8


class RunInProgress(SitekbError):
    """Another run of the same site is still running; two at once would corrupt each other."""

    exit_code = 9


class EmbeddingServiceFailed(SitekbError):
    """The embedding server answered with something that is not embeddings (invalid JSON, too few vectors, NaN).

    Terminal: the same server asked again answers the same way. The message names the server and what was wrong.
    """

    exit_code = 10


class TransientError(Exception):
    """A failure worth retrying (rate limit, timeout, lost connection)."""

    exit_code = 1
    run_id: str | None = None   # as on SitekbError
    stage: str | None = None


class EmbeddingServiceUnavailable(TransientError):
    """The embedding server kept failing (429, 5xx, timeouts, refused connections) through every retry.

    Transient: a later retry may succeed (Airflow retries the task; the cache makes it pay only for the rest).
    """

    exit_code = 10


def database_lost(exc: BaseException, doing: str = "", then: str = "") -> DatabaseUnavailable:
    """A connection that broke in the middle of work (a ``psycopg.OperationalError``), as one line.

    ``doing`` says where (" in stage embed of run X"), ``then`` what follows ("; nothing was published ...").
    """
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return DatabaseUnavailable(f"lost the database connection{doing} ({first}){then}")


class QuestionEmbeddingDelayed(TransientError):
    """A question cannot be embedded now: the snapshot's embedding server does not answer (retry later).

    The temporary sibling of :class:`EmbeddingUnavailable`, with the same exit code.
    """

    exit_code = 8
