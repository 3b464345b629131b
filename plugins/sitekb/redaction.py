"""Secrets out of every message sitekb shows or stores: one function, :func:`redact`.

An error text can carry what it was given: a database URL with its password,
an embedding server URL with a key in it, a libpq keyword string, a query
string with a token, an OpenAI key, an Authorization header. :func:`redact`
hides the secret part of each and keeps what an operator needs to see
(scheme, user, host, port, path). It is applied where text leaves sitekb's
control: the CLI's error line, a run's stored error, log lines about
connections, and the HTTP API's error bodies.
"""

from __future__ import annotations

import re

HIDDEN = "***"

_SECRET_NAMES = r"(?:password|passwd|pwd|pass|secret|token|access_token|refresh_token|api[_-]?key|apikey|key|sig|signature|auth)"

_RULES: tuple[tuple[re.Pattern, str], ...] = (
    # scheme://user:password@host  ->  scheme://user:***@host;  scheme://token@host (no user) -> ***@host
    (re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]*@", re.I), rf"\g<pre>{HIDDEN}@"),
    (re.compile(r"(?P<pre>https?://)[^\s:/@]{12,}@", re.I), rf"\g<pre>{HIDDEN}@"),
    # ?password=...&token=...  (query strings and form bodies)
    (re.compile(rf"(?P<pre>[?&;]{_SECRET_NAMES}=)[^&\s#'\"]+", re.I), rf"\g<pre>{HIDDEN}"),
    # libpq keyword strings: password=secret / password='with spaces'
    (re.compile(r"(?P<pre>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'&]+)", re.I), rf"\g<pre>{HIDDEN}"),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?P<pre>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.I), rf"\g<pre>{HIDDEN}"),
    # OpenAI-style keys anywhere
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), f"sk-{HIDDEN}"),
)


def redact(text: str) -> str:
    """``text`` with every secret it carries replaced by ``***``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
