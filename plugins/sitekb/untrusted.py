"""Safe handling of data a crawled site supplies: bounded JSON parsing and text Postgres can store.

Anyone can write a crawled page, so one hostile page must not fail a refresh:
:func:`load_json` parses page-supplied JSON (JSON-LD, ``/.well-known/tdmrep.json``)
only when it is small and shallow enough, and :func:`storable` removes the
characters a Postgres ``text`` (or ``jsonb``) value cannot hold (NUL, lone
surrogates) before anything is written. Pure: no network, no DB.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["JSON_MAX_BYTES", "JSON_MAX_DEPTH", "UntrustedJson", "json_depth", "load_json", "storable", "storable_value"]

JSON_MAX_DEPTH = 64
JSON_MAX_BYTES = 1024 * 1024

# Brackets outside strings decide the depth; strings are skipped whole (with their escapes).
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
# NUL and lone surrogates (U+D800..U+DFFF cannot occur paired in a Python str).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UntrustedJson(ValueError):
    """Page-supplied JSON that is too large or nested too deep to parse; ``reason`` says which."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason   # "too_large" or "too_deep"


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (without parsing it)."""
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def load_json(text: str | bytes, *, max_depth: int = JSON_MAX_DEPTH, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """``json.loads`` for untrusted input: UntrustedJson (a ValueError) when it is larger than
    ``max_bytes`` or nested deeper than ``max_depth``, json.JSONDecodeError when it is broken."""
    if len(text) > max_bytes:
        raise UntrustedJson("too_large", f"JSON of {len(text)} bytes, more than the limit of {max_bytes}")
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8-sig", errors="replace")
    # The cheap scan first: json's C scanner recurses and raises RecursionError at ~1000 levels.
    depth = json_depth(text)
    if depth > max_depth:
        raise UntrustedJson("too_deep", f"JSON nested {depth} deep, more than the limit of {max_depth}")
    try:
        return json.loads(text)
    except RecursionError as exc:  # a bound above the interpreter's stack: still never raised
        raise UntrustedJson("too_deep", "JSON nested too deep to parse") from exc


def storable(text: str) -> tuple[str, int]:
    """(``text`` without NUL and lone surrogates, how many characters were removed)."""
    if "\x00" not in text and not _has_surrogate(text):
        return text, 0
    cleaned, removed = _UNSTORABLE.subn("", text)
    return cleaned, removed


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def storable_value(value: Any) -> tuple[Any, int]:
    """:func:`storable` applied to every string in ``value`` (str, list, tuple, dict keys and values)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, (list, tuple)):
        removed, out = 0, []
        for item in value:
            item, count = storable_value(item)
            out.append(item)
            removed += count
        return type(value)(out), removed
    if isinstance(value, dict):
        removed, out = 0, {}
        for key, item in value.items():
            key, key_count = storable_value(key)
            out[key], count = storable_value(item)
            removed += key_count + count
        return out, removed
    return value, 0
