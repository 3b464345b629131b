"""The two kinds of error sitekb raises.

A *terminal* error (:class:`SitekbError` and its subclasses other than
:class:`TransientError`) means retrying cannot help: bad config, a quality gate
that failed, a database that is not there. Its message says what to do. The
Airflow corner turns it into a failure without retry.

A :class:`TransientError` (HTTP 429, a lost connection) may succeed on retry.

Exit codes of the CLI: 1 other, 2 config, 3 database, 4 crawl, 5 quality
gate, 6 budget, 7 not found, 8 query embedding unavailable.
"""


class SitekbError(Exception):
    """A terminal error with an actionable message."""

    exit_code = 1


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


class TransientError(Exception):
    """A failure worth retrying (rate limit, timeout, lost connection)."""
