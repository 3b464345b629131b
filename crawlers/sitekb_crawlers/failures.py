"""What kind of failure ended a request: a pure function over the exception Scrapy hands the errback.

The kinds are the ones an operator reads in the crawl statistics and the
quality gate counts per run (``sitekb.fetch_failures``):

- ``connection_refused``: nothing listens (the site is down);
- ``connection_lost``: the connection was reset or closed before a full answer;
- ``timeout``: no answer within ``crawl.timeout_seconds``;
- ``dns``: the host name does not resolve;
- ``tls``: the TLS handshake or certificate failed;
- ``http_<status>``: a transient status (408, 429, 5xx) still there after the retries.

Scrapy wraps Twisted's errors in its own (``DownloadFailedError`` around a
``ResponseFailed`` around the real reasons), so the whole chain is read: the
most specific cause wins, so a TLS error inside a lost response is ``tls``.
"""

from __future__ import annotations

import re
import socket
import ssl

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    ResponseDataLossError,
)
from twisted.internet import error as tx
from twisted.web._newclient import ResponseFailed

try:
    from OpenSSL.SSL import Error as OpenSSLError
except ImportError:  # pyOpenSSL is Scrapy's dependency; without it no TLS error of its kind can occur
    OpenSSLError = ssl.SSLError

# Most specific first: the first kind any exception of the chain matches is the answer.
KINDS: tuple[tuple[str, tuple[type[BaseException], ...]], ...] = (
    ("tls", (ssl.SSLError, OpenSSLError)),
    ("dns", (CannotResolveHostError, tx.DNSLookupError, socket.gaierror)),
    ("connection_refused", (DownloadConnectionRefusedError, tx.ConnectionRefusedError, ConnectionRefusedError)),
    ("timeout", (DownloadTimeoutError, tx.TimeoutError, tx.TCPTimedOutError, TimeoutError)),
    ("connection_lost", (ResponseDataLossError, DownloadFailedError, ResponseFailed, tx.ConnectionLost,
                         tx.ConnectionDone, tx.ConnectError, ConnectionError)),
)
MAX_CAUSES = 20


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps: ``__cause__``, ``__context__`` and Twisted's ``reasons``."""
    found: list[BaseException] = []
    pending = [exc]
    while pending and len(found) < MAX_CAUSES:
        current = pending.pop(0)
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        for reason in getattr(current, "reasons", None) or []:
            pending.append(getattr(reason, "value", reason))
        pending += [current.__cause__, current.__context__]
    return found


def kind_of(exc: BaseException) -> str:
    """The failure kind of a download exception (a snake_case class name for anything unknown)."""
    chain = causes(exc)
    for kind, types in KINDS:
        if any(isinstance(cause, types) for cause in chain):
            return kind
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def kind_of_status(status: int) -> str:
    return f"http_{status}"
