"""Why a page is not in a snapshot, in words a content owner reads.

The crawler records an exclusion as a rule and a detail (``label`` /
``#do_NOT_train_on_this``, ``robots-meta`` / ``noai``); the quality gate
records a quarantine as failed checks, each with a sentence. The ledgers
(:mod:`sitekb.heldback`) and the snapshot diff show them through
:func:`exclusion`, :func:`quarantine` and :func:`gone`, so that one page gives
the same reason wherever it is asked about.

Some exclusions are not about the site's pages at all: the sitemap or a feed
linked from a page (an XML content type), robots.txt, an image served under a
link. :func:`is_noise` names them; the ledgers leave them out unless asked
for everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

# The owner's wish: stored content of such a URL is purged (sitekb_crawlers.parsers.CONSENT_RULES).
OPT_OUT_RULES = frozenset({"robots-txt", "robots-meta", "x-robots-tag", "tdm-reservation", "label", "opt-in-missing"})

# Crawl limits and traps: the page may be fine, the crawl stopped before it.
LIMIT_RULES = frozenset({"max-pages", "max-depth", "url-too-long", "repeated-segments", "query-variants"})

_EXCLUSION_WORDS: Mapping[str, str] = {
    "label": "marked {detail}",
    "robots-meta": "robots {detail}",
    "x-robots-tag": "robots {detail} (X-Robots-Tag header)",
    "robots-txt": "disallowed by robots.txt",
    "tdm-reservation": "text and data mining reserved ({detail})",
    "opt-in-missing": "not opted in ({detail})",
    "canonical": "a copy of another page ({detail})",
    "excluded-pattern": "excluded by the site config's crawl.exclude patterns",
    "not-included": "outside the site config's crawl.include patterns",
    "private-address": "on a private address (crawl.allow_private is off)",
    "off-port": "on another port of the site's host",
    "content-type": "not a page sitekb reads ({detail})",
    "not-text": "a binary file served as a page ({detail})",
    "unparseable": "no HTML could be read from it",
    "too-large": "too large ({detail})",
    "unreadable-pdf": "a PDF that could not be read ({detail})",
    "no-text": "a PDF without text ({detail})",
    "ignored": "not requested ({detail})",
    "max-pages": "not crawled: the crawl.max_pages limit was reached",
    "max-depth": "not crawled: deeper than crawl.max_depth",
    "url-too-long": "not crawled: the URL is too long (a crawler trap guard)",
    "repeated-segments": "not crawled: repeated path segments (a crawler trap guard)",
    "query-variants": "not crawled: too many query-string variants of one path (a crawler trap guard)",
}

# Media types that are never a page a content owner wrote: sitemaps, feeds, scripts, images.
_NOISE_MEDIA_PREFIXES = ("image/", "font/", "audio/", "video/")
_NOISE_MEDIA = frozenset({"application/xml", "text/xml", "application/rss+xml", "application/atom+xml",
                          "application/json", "application/ld+json", "text/css", "text/javascript",
                          "application/javascript", "application/x-gzip", "application/gzip",
                          "application/octet-stream"})
_NOISE_FILES = frozenset({"/robots.txt", "/llms.txt", "/humans.txt", "/ads.txt", "/favicon.ico"})


def exclusion(rule: str, detail: str | None) -> str:
    """One crawl exclusion in words: ``marked #do_NOT_train_on_this``, ``robots noai``."""
    detail = (detail or "").strip()
    words = _EXCLUSION_WORDS.get(rule)
    if words is None:
        return f"excluded by rule {rule}" + (f" ({detail})" if detail else "")
    if "{detail}" in words and not detail:
        return words.replace(" ({detail})", "").replace(" {detail}", "")
    return words.format(detail=detail)


def quarantine(failures: Iterable[Mapping]) -> str:
    """A quarantined document's failed checks in words (their own sentences), joined."""
    parts = [str(f.get("message") or f.get("check") or "failed a check") for f in failures]
    return "quarantined: " + "; ".join(parts) if parts else "quarantined"


def http_status(status: int) -> str:
    """A page the site answered with an error status."""
    if status in (404, 410):
        return f"page not found ({status})" if status == 404 else "page gone (410)"
    return f"the site answered HTTP {status}"


def gone() -> str:
    """A page of the older snapshot that nothing in the newer run names: no link or sitemap entry leads to it."""
    return "no longer found on the site (no link or sitemap entry leads to it)"


def kind_of(rule: str) -> str:
    """The family of an exclusion rule: ``opt-out``, ``limit`` or ``rule``."""
    if rule in OPT_OUT_RULES:
        return "opt-out"
    if rule in LIMIT_RULES:
        return "limit"
    return "rule"


def is_noise(url: str, rule: str, detail: str | None) -> bool:
    """True for exclusions that are not the site's pages: sitemaps, feeds, robots.txt, images, scripts."""
    path = urlsplit(url).path.lower()
    if path in _NOISE_FILES or path.startswith("/.well-known/"):
        return True
    if rule != "content-type":
        return False
    media = (detail or "").split(";")[0].strip().lower()
    return (media in _NOISE_MEDIA or media.startswith(_NOISE_MEDIA_PREFIXES) or media.endswith("+xml")
            or path.endswith((".xml", ".xml.gz")))
