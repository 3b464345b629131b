"""Pure functions the spider uses: URL normalisation, scope, opt-out signals.

They take strings and return data, so they are tested on inline HTML with no
network and no Scrapy.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from lxml import html as lxml_html
from lxml.etree import ParserError

from sitekb.sites import SiteConfig


@dataclass(frozen=True)
class Exclusion:
    rule: str     # robots-meta, x-robots-tag, tdm-reservation, label, opt-in-missing, canonical, ...
    detail: str


def normalize_url(url: str, strip_params: list[str] | tuple[str, ...] = ()) -> str:
    """One page, one URL: fragment dropped, host lower-cased, tracking params removed."""
    parts = urlsplit(url.strip())
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not any(fnmatch.fnmatchcase(key.lower(), pattern.lower()) for pattern in strip_params)
    ]
    netloc = parts.netloc.lower()
    if (parts.scheme == "http" and netloc.endswith(":80")) or (parts.scheme == "https" and netloc.endswith(":443")):
        netloc = netloc.rsplit(":", 1)[0]
    path = parts.path or "/"
    return urlunsplit((parts.scheme.lower(), netloc, path, urlencode(query), ""))


class Scope:
    """Which URLs the crawl may fetch, from a site config."""

    def __init__(self, site: SiteConfig):
        self.domains = [d.lower() for d in site.domains()]
        self.include = [re.compile(p) for p in site.crawl.include_patterns]
        self.exclude = [re.compile(p) for p in site.crawl.exclude_patterns]
        self.allow_private = site.crawl.allow_private_addresses

    def why_out(self, url: str) -> str | None:
        """None if ``url`` is in scope, else the rule that keeps it out."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return "scheme"
        host = (parts.hostname or "").lower()
        if not any(host == d or host.endswith("." + d) for d in self.domains):
            return "off-domain"
        if not self.allow_private and is_private_host(host):
            return "private-address"
        if self.include and not any(p.search(url) for p in self.include):
            return "not-included"
        if any(p.search(url) for p in self.exclude):
            return "excluded-pattern"
        return None


def is_private_host(host: str) -> bool:
    """True for loopback, private, link-local and unspecified literal addresses and localhost."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified


def parse_html(body: str):
    """lxml tree of a page, or None when the body is not parseable HTML."""
    if not body or not body.strip():
        return None
    try:
        return lxml_html.document_fromstring(body)
    except (ParserError, ValueError):
        return None


def robots_directives(value: str | None) -> set[str]:
    """Directives of a robots meta or X-Robots-Tag value ('noai, noindex' → {'noai','noindex'}).

    A user-agent prefix ('googlebot: noindex') is ignored: such rules target
    other bots, and sitekb honours only the general ones and its own.
    """
    if not value:
        return set()
    found = set()
    for part in re.split(r"[,\s]+", value.lower()):
        if part and ":" not in part:
            found.add(part)
    return found


def opt_out(body: str, headers: dict[str, str], site: SiteConfig) -> Exclusion | None:
    """The first opt-out signal that excludes this page, or None if it may be used."""
    denied = {v.lower() for v in site.opt_out.robots_values}
    header_value = headers.get("x-robots-tag", "")
    hit = robots_directives(header_value) & denied
    if hit:
        return Exclusion("x-robots-tag", ",".join(sorted(hit)))
    if headers.get("tdm-reservation", "").strip() == "1":
        return Exclusion("tdm-reservation", "header tdm-reservation: 1")
    tree = parse_html(body)
    if tree is not None:
        for meta in tree.iter("meta"):
            name = (meta.get("name") or meta.get("property") or "").lower()
            content = meta.get("content") or ""
            if name in ("robots", "sitekb"):
                hit = robots_directives(content) & denied
                if hit:
                    return Exclusion("robots-meta", ",".join(sorted(hit)))
            if name == "tdm-reservation" and content.strip() == "1":
                return Exclusion("tdm-reservation", "meta tdm-reservation=1")
    lowered = body.lower()
    for label in site.opt_out.labels:
        if label.lower() in lowered:
            return Exclusion("label", label)
    if site.opt_out.opt_in_only and site.opt_out.opt_in_label.lower() not in lowered:
        return Exclusion("opt-in-missing", f"page lacks {site.opt_out.opt_in_label}")
    return None


def canonical_url(body: str, base_url: str) -> str | None:
    tree = parse_html(body)
    if tree is None:
        return None
    for link in tree.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split() and link.get("href"):
            return urljoin(base_url, link.get("href").strip())
    return None


def links(body: str, base_url: str) -> list[str]:
    """Absolute http(s) links of a page in document order, without rel=nofollow ones."""
    tree = parse_html(body)
    if tree is None:
        return []
    found = []
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if not href or href.startswith(("#", "mailto:", "tel:", "javascript:")):
            continue
        if "nofollow" in (anchor.get("rel") or "").lower().split():
            continue
        absolute = urljoin(base_url, href)
        if absolute.startswith(("http://", "https://")):
            found.append(absolute)
    return found
