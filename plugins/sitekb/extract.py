"""Main-content extraction: one fetched HTML page in, one markdown `Document` out.

Owns the call into trafilatura (boilerplate removal, markdown rendering, metadata),
the page-level metadata trafilatura does not give (canonical URL resolved against
the fetch URL, language, modified date, split keywords), and `strip_nosnippet`,
which removes sections a site marked as not for reuse. Pure: no network, no DB.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
import trafilatura
from lxml.etree import LxmlError

from sitekb.untrusted import UntrustedJson, load_json

__all__ = [
    "EXTRACTOR_VERSION",
    "NOSNIPPET_SELECTORS",
    "Document",
    "document_of_page",
    "extract_document",
    "is_text_page",
    "strip_nosnippet",
    "text_document",
]

PDF_TYPE = "application/pdf"

# Bump the suffix whenever this module changes what it emits for the same HTML,
# so stored snapshots can tell which extraction produced them.
EXTRACTOR_VERSION = f"trafilatura-{trafilatura.__version__}+sitekb.3"

NOSNIPPET_SELECTORS: tuple[str, ...] = ("[data-nosnippet]",)

# Blocks that trafilatura keeps when they sit inside the article element:
# "read more" grids, newsletter boxes, share bars, cookie dialogs, comment
# threads. Matched on class/id substrings of container elements and removed
# before extraction; measured on tests/benchmarks/extraction_pages (word
# trigram F1 0.993 -> 0.999, see bench-results/quality.json).
_BOILERPLATE_WORDS = (
    "related", "read-more", "readmore", "newsletter", "cookie", "consent", "share-", "sharing", "social",
    "advert", "ad-slot", "promo", "subscribe", "recommend", "you-may-also-like", "popup", "modal",
    "comments", "comment-form",
)
_BOILERPLATE_TAGS = ("div", "section", "aside", "ul", "form", "nav", "footer")
BOILERPLATE_SELECTORS: tuple[str, ...] = tuple(
    f"{tag}[{attr}*='{word}']" for tag in _BOILERPLATE_TAGS for attr in ("class", "id") for word in _BOILERPLATE_WORDS
)
# A matching block that holds the page's <h1> or this share of its text is the
# content itself (e.g. <div class="post related-posts-enabled">): kept.
_MAX_PRUNED_SHARE = 0.3

log = logging.getLogger(__name__)

_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}[ \t]")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_LANG_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
# Words for word_count: runs of letters/digits, so markdown markers ('#', '|', '-') don't count.
_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
_MODIFIED_META = (
    "article:modified_time",
    "og:updated_time",
    "dateModified",
    "last-modified",
    "dcterms.modified",
)


@dataclass(frozen=True)
class Document:
    """The main content of one page as markdown, with its metadata."""

    url: str
    canonical_url: str | None
    title: str | None
    description: str | None
    author: str | None
    published: str | None
    modified: str | None
    language: str | None
    tags: tuple[str, ...]
    markdown: str
    word_count: int
    content_hash: str
    # Words a reader sees on the whole page (body text outside scripts and styles),
    # for the quality gate's boilerplate share; 0 when unknown.
    visible_words: int = 0


def _parse(html: str) -> lxml.html.HtmlElement | None:
    """Parse a page the way trafilatura does; fall back to lxml for fragments it rejects."""
    if not html or not html.strip():
        return None
    try:
        tree = trafilatura.load_html(html)
    except (LxmlError, ValueError, TypeError) as exc:
        log.debug("trafilatura could not parse the page: %s", exc)
        tree = None
    if tree is not None:
        return tree
    try:
        return lxml.html.document_fromstring(html)
    except (LxmlError, ValueError) as exc:
        log.debug("lxml could not parse the page: %s", exc)
        return None


@functools.lru_cache(maxsize=32)
def _compile_selectors(selectors: tuple[str, ...]) -> Any:
    from cssselect import SelectorError
    from lxml.cssselect import CSSSelector

    try:
        return CSSSelector(", ".join(selectors))
    except SelectorError as exc:
        raise ValueError(f"invalid CSS selector in {selectors!r}: {exc}") from exc


def _drop_matching(tree: lxml.html.HtmlElement, selectors: Sequence[str]) -> int:
    if not selectors:
        return 0
    matches = _compile_selectors(tuple(selectors))(tree)
    for element in matches:
        if element.getparent() is not None:
            element.drop_tree()  # keeps the element's tail text, which belongs to its parent
    return len(matches)


def _prune_boilerplate(tree: lxml.html.HtmlElement) -> int:
    matches = _compile_selectors(BOILERPLATE_SELECTORS)(tree)
    if not matches:
        return 0
    total = max(1, len(tree.text_content()))
    dropped = 0
    for element in matches:
        if element.getparent() is None or any(True for _ in element.iter("h1")):
            continue
        if len(element.text_content()) > _MAX_PRUNED_SHARE * total:
            continue
        element.drop_tree()
        dropped += 1
    return dropped


def strip_nosnippet(html: str, selectors: Sequence[str] = NOSNIPPET_SELECTORS) -> str:
    """Return `html` without the elements matching any CSS selector (default: [data-nosnippet])."""
    tree = _parse(html)
    if tree is None:
        return html
    if not _drop_matching(tree, selectors):
        return html
    return lxml.html.tostring(tree, encoding="unicode")


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


def _meta_values(tree: lxml.html.HtmlElement, keys: Iterable[str]) -> Iterator[str]:
    wanted = {key.lower() for key in keys}
    for meta in tree.iter("meta"):
        key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or meta.get("http-equiv") or "")
        if key.strip().lower() in wanted and (content := _clean(meta.get("content"))):
            yield content


def _iso_date(value: str | None) -> str | None:
    match = _ISO_DATE.search(value or "")
    if not match:
        return None
    year, month, day = (int(group) for group in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return match.group(0)


# Script types whose JSON trafilatura and htmldate parse (metadata, dates, the baseline extractor).
_JSON_SCRIPT_TYPES = ("application/ld+json", "application/settings+json")


def _json_ld_scripts(tree: lxml.html.HtmlElement) -> Iterator[lxml.html.HtmlElement]:
    for script in tree.iter("script"):
        if (script.get("type") or "").strip().lower() in _JSON_SCRIPT_TYPES and script.text:
            yield script


def _drop_unsafe_json_ld(tree: lxml.html.HtmlElement, url: str) -> int:
    """Remove JSON-LD too large or nested too deep to parse safely (trafilatura parses it unbounded)."""
    unsafe = []
    for script in _json_ld_scripts(tree):
        try:
            load_json(script.text)
        except UntrustedJson as exc:
            log.info("JSON-LD of %s ignored: %s", url, exc)
            unsafe.append(script)
        except ValueError:  # broken JSON-LD: trafilatura copes with that
            continue
    for script in unsafe:
        script.drop_tree()
    return len(unsafe)


def _json_ld_values(tree: lxml.html.HtmlElement, key: str) -> Iterator[str]:
    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get(key), str):
                yield node[key]
            for child in node.values():
                yield from walk(child)
        elif isinstance(node, list):
            for child in node:
                yield from walk(child)

    for script in _json_ld_scripts(tree):
        try:
            data = load_json(script.text)   # bounded depth, so walk() cannot recurse too deep
        except ValueError:  # broken (or too large, too deep) JSON-LD is common; it just carries no date
            continue
        yield from walk(data)


def _modified_date(tree: lxml.html.HtmlElement) -> str | None:
    candidates = list(_meta_values(tree, _MODIFIED_META))
    candidates += [el.get("datetime") or "" for el in tree.iterfind(".//time[@itemprop='dateModified']")]
    candidates += list(_json_ld_values(tree, "dateModified"))
    return next((date for c in candidates if (date := _iso_date(c))), None)


def _canonical_url(tree: lxml.html.HtmlElement, url: str) -> str | None:
    hrefs = [
        link.get("href")
        for link in tree.iter("link")
        if "canonical" in (link.get("rel") or "").lower().split()
    ]
    hrefs += list(_meta_values(tree, ("og:url",)))
    for href in hrefs:
        href = (href or "").strip()
        if not href:
            continue
        try:
            absolute = urljoin(url, href)
            parts = urlsplit(absolute)
        except ValueError:  # e.g. a malformed IPv6 netloc
            continue
        if parts.scheme in ("http", "https") and parts.netloc:
            return absolute
    return None


def _language(tree: lxml.html.HtmlElement, fallback: str | None) -> str | None:
    candidates = [tree.get("lang"), tree.get("{http://www.w3.org/XML/1998/namespace}lang")]
    candidates += list(_meta_values(tree, ("content-language", "language", "og:locale", "dc.language")))
    candidates.append(fallback)
    for candidate in candidates:
        # "en_GB" (og:locale) and "en-GB, fr" (http-equiv lists) both occur in the wild.
        tag = (candidate or "").split(",")[0].strip().replace("_", "-")
        if _LANG_TAG.match(tag):
            return tag
    return None


def _tags(extracted: Any) -> tuple[str, ...]:
    # trafilatura returns meta keywords as one comma-separated string; split them.
    raw = list(getattr(extracted, "tags", None) or []) + list(getattr(extracted, "categories", None) or [])
    seen: dict[str, str] = {}
    for value in raw:
        for part in str(value).split(","):
            tag = " ".join(part.split())
            if tag and tag.lower() not in seen:
                seen[tag.lower()] = tag
    return tuple(seen.values())


_INVISIBLE = frozenset({"script", "style", "noscript", "template", "svg", "head"})


def visible_word_count(tree: lxml.html.HtmlElement) -> int:
    """Words of the page a reader could see: every text node outside scripts, styles and <head>."""
    from lxml import etree

    count = 0
    hidden = 0  # how many invisible elements enclose the current one
    for event, node in etree.iterwalk(tree, events=("start", "end")):
        invisible = not isinstance(node.tag, str) or node.tag in _INVISIBLE
        if event == "start":
            if invisible:
                hidden += 1
            elif not hidden and node.text:
                count += len(_WORD.findall(node.text))
        else:
            if invisible:
                hidden -= 1
            # A tail is outside its element: it counts whenever the parent is visible.
            if not hidden and node.tail:
                count += len(_WORD.findall(node.tail))
    return count


def _tidy_markdown(text: str) -> str:
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def extract_document(html: str, url: str, *, favor_precision: bool = True,
                     prune_boilerplate: bool = True) -> Document | None:
    """Extract the main content of `html` (fetched from `url`) as markdown.

    ``favor_precision`` and ``prune_boilerplate`` (drop related/newsletter/share/
    cookie/comment blocks before trafilatura runs) are sitekb's tuned defaults;
    the extraction benchmark compares them with trafilatura's own defaults.

    None when no main content could be found (e.g. empty body or not HTML at all).
    """
    tree = _parse(html)
    if tree is None:
        return None
    _drop_matching(tree, NOSNIPPET_SELECTORS)
    _drop_unsafe_json_ld(tree, url)
    # Counted before trafilatura runs: it prunes the tree it is given.
    visible_words = visible_word_count(tree)
    if prune_boilerplate:
        _prune_boilerplate(tree)
    try:
        extracted = trafilatura.bare_extraction(
            tree,
            url=url,
            # "python" returns the metadata and the body rendered with markdown
            # formatting in .text, without the YAML header the "markdown" format adds.
            output_format="python",
            include_formatting=True,
            include_tables=True,
            include_links=False,
            include_images=False,
            include_comments=False,
            with_metadata=True,
            favor_precision=favor_precision,
        )
    except (LxmlError, ValueError, TypeError) as exc:
        log.info("no main content extracted from %s: %s", url, exc)
        return None
    if extracted is None or not getattr(extracted, "text", None):
        return None
    markdown = _tidy_markdown(extracted.text)
    # Text without a single word (stray markup, binary junk) is not content.
    if not _WORD.search(markdown):
        return None

    title = _clean(extracted.title)
    # The chunker builds heading paths from '#' lines; trafilatura drops an <h1>
    # that sits outside the main content (e.g. in a hero header).
    if title and not _HEADING_LINE.match(markdown):
        markdown = f"# {title}\n\n{markdown}"

    return Document(
        url=url,
        canonical_url=_canonical_url(tree, url),
        title=title,
        description=_clean(extracted.description),
        author=_clean(extracted.author),
        published=_iso_date(extracted.date),
        modified=_modified_date(tree),
        language=_language(tree, getattr(extracted, "language", None)),
        tags=_tags(extracted),
        markdown=markdown,
        word_count=len(_WORD.findall(markdown)),
        content_hash=hashlib.sha256(markdown.encode("utf-8")).hexdigest(),
        visible_words=visible_words,
    )


def is_text_page(content_type: str | None) -> bool:
    """True for pages whose stored body is plain text (the crawler stores a PDF's text), not HTML."""
    return (content_type or "").split(";")[0].strip().lower() == PDF_TYPE


def text_document(text: str, url: str) -> Document | None:
    """A :class:`Document` of plain text the crawler stored (PDF text); None when there is no text at all.

    The crawler writes the PDF's title as a first ``# Title`` line.
    """
    markdown = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n")).strip()
    if not _WORD.search(markdown):
        return None
    first = markdown.split("\n", 1)[0]
    title = first[2:].strip() if first.startswith("# ") else None
    words = len(_WORD.findall(markdown))
    return Document(
        url=url, canonical_url=None, title=title, description=None, author=None, published=None,
        modified=None, language=None, tags=(), markdown=markdown, word_count=words,
        content_hash=hashlib.sha256(markdown.encode("utf-8")).hexdigest(),
        visible_words=words,  # a PDF's text is all visible, no boilerplate
    )


def document_of_page(body: str, url: str, content_type: str | None,
                     nosnippet_selectors: Sequence[str] = NOSNIPPET_SELECTORS) -> Document | None:
    """The document of one stored page: PDF text as it is, HTML through :func:`extract_document`.

    Sections matching ``nosnippet_selectors`` (the site's ``opt_out.nosnippet_selectors``)
    are cut first. None when the page has no main content.
    """
    if is_text_page(content_type):
        doc = text_document(body, url)
    else:
        selectors = tuple(nosnippet_selectors)
        doc = extract_document(strip_nosnippet(body, selectors) if selectors else body, url)
    if doc is None or not doc.markdown.strip():
        return None
    return doc
