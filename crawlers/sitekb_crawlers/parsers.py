"""Pure functions the spider uses: URLs, scope, page facts, opt-out signals, bodies.

They take strings or bytes and return data, so they are tested on inline HTML
with no network and no Scrapy. The spider parses a page once
(:func:`read_page`) and every rule reads that result.
"""

from __future__ import annotations

import codecs
import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from lxml import html as lxml_html
from lxml.etree import LxmlError, ParserError
from w3lib.url import safe_url_string

from sitekb.sites import SiteConfig
from sitekb.untrusted import load_json


@dataclass(frozen=True)
class Exclusion:
    rule: str     # robots-meta, x-robots-tag, tdm-reservation, label, opt-in-missing, canonical, ...
    detail: str


# Rules that express the site owner's wish: stored content of such a URL is
# purged, not merely left out of one snapshot.
CONSENT_RULES = frozenset(
    {"robots-txt", "robots-meta", "x-robots-tag", "tdm-reservation", "label", "opt-in-missing"}
)


# -- URLs -----------------------------------------------------------------------

_DOT_SEGMENTS = re.compile(r"(^|/)\.\.?(?=/|$)")
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
_SAFE_URL = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_escapes(text: str) -> str:
    """Upper-case percent escapes and decode the ones of unreserved characters (RFC 3986 6.2.2)."""

    def fix(match: re.Match) -> str:
        char = chr(int(match.group(0)[1:], 16))
        return char if char in _UNRESERVED else match.group(0).upper()

    return _ESCAPE.sub(fix, text)


def _remove_dot_segments(path: str) -> str:
    if not _DOT_SEGMENTS.search(path):
        return path
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(out) > 1:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if path.endswith(("/.", "/..")):
        out.append("")
    return "/".join(out) or "/"


def _stripped(key: str, patterns: tuple[str, ...]) -> bool:
    key = unquote(key).lower()
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def normalize_url(url: str, strip_params: list[str] | tuple[str, ...] = (), sort_query: bool = True) -> str:
    """One page, one URL.

    Fragment dropped; scheme and host lower-cased; default port, dot segments
    and needless percent escapes removed; query parameters matching
    ``strip_params`` (shell patterns such as ``utm_*``, case-insensitive)
    dropped, also as ``;jsessionid=`` path parameters; the rest sorted when
    ``sort_query``. Raw ``key=value`` pairs are kept as they came, so no
    value is re-encoded.
    """
    patterns = tuple(p.lower() for p in strip_params)
    url = url.strip()
    if not _SAFE_URL.match(url):  # non-ASCII, spaces, quotes: escape them first (slow path)
        url = safe_url_string(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    if (scheme == "http" and netloc.endswith(":80")) or (scheme == "https" and netloc.endswith(":443")):
        netloc = netloc.rsplit(":", 1)[0]
    path = parts.path or "/"
    if ";" in path and patterns:
        # /cart;jsessionid=ABC → /cart
        segments = []
        for segment in path.split("/"):
            name, *params = segment.split(";")
            kept = [p for p in params if not _stripped(p.split("=", 1)[0], patterns)]
            segments.append(";".join([name, *kept]))
        path = "/".join(segments)
    path = _remove_dot_segments(_normalize_escapes(path))
    pairs = [p for p in parts.query.split("&") if p and not _stripped(p.split("=", 1)[0], patterns)]
    if sort_query:
        pairs.sort()
    query = _normalize_escapes("&".join(pairs))
    return urlunsplit((scheme, netloc, path, query, ""))


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:  # a port out of range or not a number
        return None
    return parts.scheme, parts.hostname.lower(), port


class Scope:
    """Which URLs the crawl may fetch: allowed origins and domains, include/exclude patterns, private addresses.

    A URL is on-site when its origin (scheme, host, port) is one of ``origins``
    (the start URLs' own), or when its host is one of ``domains`` (or below one)
    and its port is the scheme's default. So a page of https://example.com/
    cannot send the crawler to https://example.com:6379/, an internal service
    on the same host. An ``allowed_domains`` entry written as an origin
    (``https://example.com:8443``) admits that origin.
    """

    def __init__(self, domains: list[str], include_patterns: list[str] = (), exclude_patterns: list[str] = (),
                 allow_private: bool = False, origins: list[str] = ()):
        self.domains = [d.lower() for d in domains if "://" not in d]
        self.origins = {o for o in map(_origin, [*origins, *(d for d in domains if "://" in d)]) if o}
        self.include = [re.compile(p) for p in include_patterns]
        self.exclude = [re.compile(p) for p in exclude_patterns]
        self.allow_private = allow_private

    @staticmethod
    def values(site: SiteConfig) -> dict:
        """The plain values of a site's scope (what the Scrapy settings carry to a component)."""
        return {"domains": site.domains(), "origins": list(site.start_urls),
                "include_patterns": list(site.crawl.include_patterns),
                "exclude_patterns": list(site.crawl.exclude_patterns),
                "allow_private": site.crawl.allow_private_addresses}

    @classmethod
    def of(cls, site: SiteConfig) -> "Scope":
        return cls(**cls.values(site))

    def why_out(self, url: str) -> str | None:
        """None if ``url`` is in scope, else the rule that keeps it out."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            return "scheme"
        origin = _origin(url)
        if origin is None:
            return "off-domain"
        scheme, host, port = origin
        if origin not in self.origins:
            if not any(host == d or host.endswith("." + d) for d in self.domains):
                return "off-domain"
            if port != DEFAULT_PORTS[scheme]:
                return "off-port"
        if not self.allow_private and is_private_host(host):
            return "private-address"
        if self.include and not any(p.search(url) for p in self.include):
            return "not-included"
        if any(p.search(url) for p in self.exclude):
            return "excluded-pattern"
        return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries: mapped, compatible, NAT64 (64:ff9b::/96) or 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if address in NAT64_PREFIX or address in NAT64_LOCAL_PREFIX:
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if packed >> 32 == 0 and packed > 1:   # deprecated IPv4-compatible ::a.b.c.d (:: and ::1 are themselves)
        return ipaddress.IPv4Address(packed)
    return None


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for a globally routable address, with any IPv4 inside an IPv6 one routable too.

    ``is_global`` leaves out loopback, private, link-local (cloud metadata at
    169.254.169.254), carrier-grade NAT 100.64.0.0/10 (Alibaba's metadata
    100.100.100.200), documentation and reserved ranges; an IPv6 address
    embedding IPv4 (::ffff:10.0.0.1, 64:ff9b::7f00:1, 2002:0a00:0001::) is
    judged by the IPv4 address it reaches.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public_address(inner)
    return address.is_global and not address.is_multicast


def is_private_host(host: str) -> bool:
    """True for localhost names and for every literal address that is not globally routable.

    A name (other than localhost) is False here: what it resolves to is checked
    where the connection is made (:mod:`sitekb_crawlers.resolver`).
    """
    host = host.strip("[]").lower().rstrip(".")
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not is_public_address(address)


def agent_token(user_agent: str) -> str:
    """The product token robots.txt and robots meta name us by ('sitekb/0.1 (+…)' → 'sitekb')."""
    return user_agent.split("/")[0].split()[0].strip().lower() if user_agent.strip() else "sitekb"


# -- bodies ---------------------------------------------------------------------

def media_type(content_type: str | None) -> str:
    """'text/html; charset=utf-8' → 'text/html' ('' when absent)."""
    return (content_type or "").split(";")[0].strip().lower()


def looks_binary(data: bytes) -> bool:
    """True when the start of a body is not text (NULs or many control bytes)."""
    head = data[:2048]
    if not head:
        return False
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return controls / len(head) > 0.05


_CONTROL_BYTES = bytes([*range(0, 9), *range(14, 32)])
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def declared_charset(content_type: str | None, data: bytes) -> str | None:
    """The charset a page declares: BOM, then the Content-Type header, then a <meta> tag."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    match = re.search(r"charset\s*=\s*([^;\s]+)", content_type or "", re.I)
    if match and _codec(match.group(1)):
        return _codec(match.group(1))
    match = _META_CHARSET.search(data[:4096])
    return _codec(match.group(1).decode("ascii", "replace")) if match else None


def decode_html(data: bytes, content_type: str | None) -> tuple[str, str | None]:
    """Decode an HTML body; returns (text, problem).

    problem is None, ``charset_missing`` (nothing declared; UTF-8 or else
    Windows-1252 assumed) or ``charset_mismatch`` (the declared charset does
    not decode the bytes; UTF-8, else Windows-1252, used instead). Browsers do
    the same, so the text is what a reader saw.
    """
    declared = declared_charset(content_type, data)
    if declared:
        try:
            return data.decode(declared).lstrip("\ufeff"), None
        except UnicodeDecodeError:
            problem = "charset_mismatch"
    else:
        problem = "charset_missing"
    try:
        return data.decode("utf-8").lstrip("\ufeff"), problem
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), problem


# -- pages ----------------------------------------------------------------------

_VALUE_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


def robots_directives(value: str | None, agent: str = "sitekb") -> set[str]:
    """Directives of a robots meta or X-Robots-Tag value that apply to ``agent``.

    'noai, noindex' → {'noai','noindex'}. A user-agent prefix scopes the
    directives after it ('googlebot: noindex, nofollow'): those of other bots
    are ignored, those naming ``agent`` count.
    """
    if not value:
        return set()
    found: set[str] = set()
    target: str | None = None
    for part in value.lower().split(","):
        part = part.strip()
        match = re.match(r"^([a-z0-9_.-]+)\s*:\s*(.*)$", part)
        if match and match.group(1) in _VALUE_DIRECTIVES:
            continue  # 'unavailable_after: <date>', 'max-snippet: 0': no opt-out
        if match:
            target, part = match.group(1), match.group(2)
        for directive in part.split():
            if ":" in directive:
                continue  # max-snippet:0 and the like carry no opt-out
            if target is None or target == agent:
                found.add(directive)
    return found


@dataclass
class PageFacts:
    """What the rules need from one parsed HTML page."""

    parsed: bool = False
    malformed: bool = False
    canonical: str | None = None
    robots: set[str] = field(default_factory=set)   # meta robots directives that apply to us
    tdm_reservation: str | None = None
    tdm_policy: str | None = None
    links: list[str] = field(default_factory=list)


def parse_html(body: str):
    """lxml tree of a page, or None when the body is not parseable HTML."""
    if not body or not body.strip():
        return None
    try:
        return lxml_html.document_fromstring(body)
    except (ParserError, LxmlError, ValueError):
        return None


def read_page(body: str, base_url: str, agent: str = "sitekb") -> PageFacts:
    """Parse ``body`` once and collect canonical URL, robots/TDM meta and links."""
    facts = PageFacts()
    if not body or not body.strip():
        return facts
    parser = lxml_html.HTMLParser(recover=True)
    try:
        tree = lxml_html.document_fromstring(body, parser=parser)
    except (ParserError, LxmlError, ValueError):
        return facts
    facts.parsed = True
    # libxml2 recovers from broken markup; its error log says it had to.
    facts.malformed = len(parser.error_log) > 0
    for meta in tree.iter("meta"):
        name = (meta.get("name") or meta.get("property") or "").strip().lower()
        content = meta.get("content") or ""
        if name in ("robots", "sitekb", agent):
            facts.robots |= robots_directives(content, agent)
        elif name == "tdm-reservation":
            facts.tdm_reservation = content.strip()
        elif name == "tdm-policy":
            facts.tdm_policy = content.strip()
    for link in tree.iter("link"):
        if facts.canonical is None and "canonical" in (link.get("rel") or "").lower().split() and link.get("href"):
            facts.canonical = _join(base_url, link.get("href"))
    base = tree.find(".//base[@href]")
    if base is not None:
        base_url = _join(base_url, base.get("href")) or base_url
    origin = "{0}://{1}".format(*urlsplit(base_url)[:2])
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        if not href or href.startswith(("#", "mailto:", "tel:", "javascript:", "data:")):
            continue
        if "nofollow" in (anchor.get("rel") or "").lower().split():
            continue
        if href.startswith("/") and not href.startswith("//") and "/." not in href:
            absolute = origin + href   # the common case, without urljoin's cost
        else:
            absolute = _join(base_url, href)
        if absolute and absolute.startswith(("http://", "https://")):
            facts.links.append(absolute)
    return facts


def _join(base: str, href: str) -> str | None:
    try:
        if href.startswith(("http://", "https://")):
            urlsplit(href)  # validates, e.g. a malformed IPv6 netloc
            return href
        return urljoin(base, href.strip())
    except ValueError:
        return None


def canonical_url(body: str, base_url: str) -> str | None:
    return read_page(body, base_url).canonical


def links(body: str, base_url: str) -> list[str]:
    """Absolute http(s) links of a page in document order, without rel=nofollow ones."""
    return read_page(body, base_url).links


def header_opt_out(headers: dict[str, str], site: SiteConfig, agent: str = "sitekb") -> Exclusion | None:
    """An opt-out carried by response headers alone (also on a 304)."""
    denied = {v.lower() for v in site.opt_out.robots_values}
    hit = robots_directives(headers.get("x-robots-tag", ""), agent) & denied
    if hit:
        return Exclusion("x-robots-tag", ",".join(sorted(hit)))
    if headers.get("tdm-reservation", "").strip() == "1":
        policy = headers.get("tdm-policy", "").strip()
        return Exclusion("tdm-reservation", "header tdm-reservation: 1" + (f" (policy {policy})" if policy else ""))
    return None


def opt_out(body: str, headers: dict[str, str], site: SiteConfig, facts: PageFacts | None = None,
            agent: str = "sitekb", lowered: str | None = None) -> Exclusion | None:
    """The first opt-out signal that excludes this page, or None if it may be used.

    ``headers`` have lower-case names; ``facts`` is the parsed page (None
    for PDFs, whose text is checked for labels only); ``lowered`` is
    ``body.lower()`` when the caller has it already.
    """
    signal = header_opt_out(headers, site, agent)
    if signal is not None:
        return signal
    if facts is not None:
        denied = {v.lower() for v in site.opt_out.robots_values}
        hit = facts.robots & denied
        if hit:
            return Exclusion("robots-meta", ",".join(sorted(hit)))
        if facts.tdm_reservation == "1":
            detail = "meta tdm-reservation=1" + (f" (policy {facts.tdm_policy})" if facts.tdm_policy else "")
            return Exclusion("tdm-reservation", detail)
    # Labels count anywhere: visible text, keywords, tags.
    lowered = body.lower() if lowered is None else lowered
    for label in site.opt_out.labels:
        if label.lower() in lowered:
            return Exclusion("label", label)
    if site.opt_out.opt_in_only and site.opt_out.opt_in_label.lower() not in lowered:
        return Exclusion("opt-in-missing", f"page lacks {site.opt_out.opt_in_label}")
    return None


# -- TDMRep /.well-known/tdmrep.json ---------------------------------------------

@dataclass(frozen=True)
class TdmRule:
    location: str
    reserved: bool
    policy: str | None = None

    def matches(self, url: str) -> bool:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return _location_regex(self.location).match(target) is not None


def _location_regex(location: str) -> re.Pattern:
    # robots.txt path syntax (RFC 9309 2.2.3): '*' any characters, a final '$' anchors.
    anchored = location.endswith("$")
    core = location[:-1] if anchored else location
    pattern = ".*".join(re.escape(piece) for piece in core.split("*"))
    return re.compile(pattern + ("$" if anchored else ""))


def parse_tdmrep(text: str | bytes) -> list[TdmRule]:
    """Rules of a tdmrep.json file; ValueError when it is not a valid rule list.

    The file is the site's: one too large or nested too deep raises
    :class:`sitekb.untrusted.UntrustedJson` (a ValueError), never RecursionError.
    """
    data = load_json(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("tdmrep.json must hold a list of rules")
    rules = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
            raise ValueError(f"tdmrep.json rule without a location: {entry!r}")
        reservation = entry.get("tdm-reservation", 0)
        rules.append(TdmRule(entry["location"].strip() or "/", str(reservation).strip() == "1",
                             entry.get("tdm-policy")))
    return rules


def tdm_rule_for(rules: list[TdmRule], url: str) -> TdmRule | None:
    """The rule that governs ``url``: the first one whose location matches."""
    return next((rule for rule in rules if rule.matches(url)), None)


# -- dates --------------------------------------------------------------------------

_W3C_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_lastmod(value: str | None) -> datetime | None:
    """The latest instant a sitemap ``lastmod`` may mean, in UTC; None when unreadable.

    A date without a time could be any moment of that day in any time zone,
    so it means the end of the day at UTC-12: a page changed that day is
    never wrongly taken as unchanged.
    """
    value = (value or "").strip()
    if not value:
        return None
    match = _W3C_DATE.match(value)
    if match:
        year, month, day = int(match.group(1)), int(match.group(2) or 12), int(match.group(3) or 0)
        try:
            if day == 0:  # year or year-month: the end of that month
                first_next = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
            else:
                first_next = datetime(year, month, day, tzinfo=timezone.utc) + timedelta(days=1)
        except ValueError:
            return None
        return first_next + timedelta(hours=12)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # a time without a zone: assume the latest zone
        return parsed.replace(tzinfo=timezone.utc) + timedelta(hours=12)
    return parsed.astimezone(timezone.utc)


def unchanged_since(lastmod: str | None, fetched_at: datetime | None) -> bool:
    """True when a sitemap ``lastmod`` says the page has not changed since ``fetched_at``."""
    changed = parse_lastmod(lastmod)
    if changed is None or fetched_at is None:
        return False
    if fetched_at.tzinfo is None:
        fetched_at = fetched_at.replace(tzinfo=timezone.utc)
    return changed <= fetched_at


def retry_after_seconds(value: str | bytes | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def robots_looks_broken(body: bytes) -> bool:
    """True when a non-empty robots.txt has no line a robots parser understands."""
    if not body.strip():
        return False
    if looks_binary(body):
        return True
    text = body[:65536].decode("utf-8", errors="replace")
    return re.search(r"(?im)^\s*(user-agent|disallow|allow|sitemap|crawl-delay)\s*:", text) is None
