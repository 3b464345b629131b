"""Main-content extraction: one fetched HTML page in, one markdown `Document` out.

Owns the call into trafilatura (boilerplate removal, markdown rendering, metadata),
the page-level metadata trafilatura does not give (canonical URL resolved against
the fetch URL, language, modified date, split keywords), and `strip_nosnippet`,
which removes sections a site marked as not for reuse. Pure: no network, no DB.

Hidden text (:func:`find_hidden`) never reaches a document: text a visitor does
not see but a crawler reads is how instructions to a chatbot or keyword stuffing
get planted. Hidden means an element with ``hidden``, ``aria-hidden="true"``, or
an inline style that hides it (``display:none``, ``visibility:hidden``,
``font-size:0``, ``opacity:0``, ``color:transparent``, the text colour equal to
the background, positioned or indented 1000px or more off screen); ``<template>``
is inert markup and dropped too. Collapsed content a visitor opens is content:
``<details>``, ``hidden="until-found"``, and a ``hidden``/``display:none`` panel
whose id a control names (``aria-controls``, ``data-target``, ``data-bs-target``:
an FAQ answer, a tab) are kept. Screen-reader-only text (``.sr-only`` and the
other CSS-class techniques, which an extractor cannot see) is read to visitors
who use one and is kept. The quality gate measures what was dropped with
:func:`hidden_text_of_page`.

Boilerplate pruning (:data:`BOILERPLATE_RULES`, :data:`DEFAULT_BOILERPLATE_RULES`)
drops "read more"/related grids, newsletter boxes and ads that trafilatura keeps
inside an article, matched on whole leading words of class names and ids. It never
costs a page its article: when it removed most of what trafilatura finds without
it, the unpruned extraction is used; when trafilatura's precision mode keeps a
fragment and recall mode finds the article, recall mode's is used
(``Document.fallbacks`` says which).

Titles and headings are plain text from here on: tags stripped, entities
decoded, whitespace collapsed (:func:`plain_heading`), so stored documents,
heading paths and everything downstream hold no markup.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
import trafilatura
from lxml.etree import LxmlError

from sitekb.passages import plain_text
from sitekb.untrusted import UntrustedJson, load_json

__all__ = [
    "BOILERPLATE_RULES",
    "DEFAULT_BOILERPLATE_RULES",
    "EXTRACTOR_VERSION",
    "NOSNIPPET_SELECTORS",
    "Document",
    "HiddenText",
    "document_of_page",
    "extract_document",
    "find_hidden",
    "hidden_text_of_page",
    "is_text_page",
    "plain_heading",
    "strip_nosnippet",
    "text_document",
    "with_markdown",
]

PDF_TYPE = "application/pdf"

# Bump the suffix whenever this module changes what it emits for the same HTML,
# so stored snapshots can tell which extraction produced them.
EXTRACTOR_VERSION = f"trafilatura-{trafilatura.__version__}+sitekb.5"

NOSNIPPET_SELECTORS: tuple[str, ...] = ("[data-nosnippet]",)

# Blocks that trafilatura keeps when they sit inside the article element, by
# family: "read more" grids, newsletter boxes, ads, and (candidates only) share
# bars, cookie dialogs, comment threads. A container (one of _BOILERPLATE_TAGS)
# is pruned before extraction when one of its class names or its id *starts
# with* a family's word as whole hyphen/underscore-delimited words
# (_names_boilerplate): "read-more" and "related-posts" are such boxes, while
# "entry-content-read-more" is the content block with a modifier and is kept.
BOILERPLATE_RULES: dict[str, tuple[str, ...]] = {
    "related": ("related", "read-more", "readmore", "recommend", "you-may-also-like"),
    "newsletter": ("newsletter", "subscribe"),
    "ads": ("advert", "ad-slot", "promo"),
    "consent": ("cookie", "consent", "popup", "modal"),
    "share": ("share", "sharing", "social"),
    "comments": ("comments", "comment-form"),
}
# The families that measurably help, each measured by leaving it out on the 181
# real pages of the article-extraction-benchmark and the hand-written pages
# (tests/benchmarks/test_bench_extraction_real.py): "ads" and "newsletter" on the
# real pages, "related" on the hand-written ones (it changes no real page).
# "consent", "share" and "comments" changed nothing on either set (trafilatura
# drops those blocks itself) and are off.
DEFAULT_BOILERPLATE_RULES: tuple[str, ...] = ("related", "newsletter", "ads")
_BOILERPLATE_TAGS = frozenset({"div", "section", "aside", "ul", "form", "nav", "footer"})
_NAME_SEPARATORS = re.compile(r"[-_]+")
# A matching block that holds the page's <h1> or this share of its text is the
# content itself (e.g. <div class="post related-posts-enabled">): kept.
_MAX_PRUNED_SHARE = 0.3
# Pruning that leaves less than this share of the word 4-grams trafilatura keeps
# without it removed the article, not boilerplate: the unpruned extraction is used.
_MIN_KEPT_AFTER_PRUNING = 0.5
# Precision mode keeping fewer words than this is checked against recall mode, which
# is used when it finds _RECALL_FACTOR times as many (a page whose article precision
# mode missed: 1 of the 181 real pages, tests/benchmarks/test_bench_extraction_real.py).
_SHORT_PRECISE_WORDS = 150
_RECALL_FACTOR = 4

log = logging.getLogger(__name__)

_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}[ \t]")
_HEADING_TEXT = re.compile(r"^( {0,3}#{1,6})[ \t]+(.*)$")
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
    # Second looks extract_document took because the first extraction lost the article:
    # "unpruned" (boilerplate pruning removed it), "favor_recall" (precision mode kept a fragment).
    fallbacks: tuple[str, ...] = ()
    # What was cut before trafilatura ran, for `sitekb explain`: sections marked nosnippet
    # (data-nosnippet and the site's selectors), hidden elements, pruned boilerplate blocks.
    nosnippet_removed: int = 0
    hidden_removed: int = 0
    boilerplate_blocks: int = 0

    def extraction(self) -> dict:
        """What the extractor cut from the page (stored with the document, shown by `sitekb explain`)."""
        return {"nosnippet_removed": self.nosnippet_removed, "hidden_removed": self.hidden_removed,
                "boilerplate_blocks": self.boilerplate_blocks,
                "fallbacks": list(self.fallbacks)}


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


def _name_words(name: str) -> tuple[str, ...]:
    return tuple(word for word in _NAME_SEPARATORS.split(name.lower()) if word)


@functools.lru_cache(maxsize=8)
def _rule_words(families: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    unknown = set(families) - BOILERPLATE_RULES.keys()
    if unknown:
        raise ValueError(f"unknown boilerplate rule families {sorted(unknown)}; known: {sorted(BOILERPLATE_RULES)}")
    return tuple(_name_words(word) for family in families for word in BOILERPLATE_RULES[family])


def _names_boilerplate(name: str, rules: tuple[tuple[str, ...], ...]) -> bool:
    """True when a class name or id begins with a rule's words: 'read-more', 'related_posts', not 'entry-read-more'."""
    words = _name_words(name)
    return any(words[: len(rule)] == rule for rule in rules)


def _boilerplate_blocks(tree: lxml.html.HtmlElement, families: Sequence[str]) -> list[lxml.html.HtmlElement]:
    """The outermost containers of ``tree`` the rule ``families`` name as boilerplate, content blocks excepted."""
    rules = _rule_words(tuple(families))
    if not rules:
        return []
    total = max(1, len(tree.text_content()))
    chosen: list[lxml.html.HtmlElement] = []
    inside: set[lxml.html.HtmlElement] = set()  # elements within a chosen block (removed with it)
    for element in tree.iter(*_BOILERPLATE_TAGS):
        if element in inside:
            continue
        names = [*(element.get("class") or "").split(), (element.get("id") or "").strip()]
        if not any(_names_boilerplate(name, rules) for name in names if name):
            continue
        if any(True for _ in element.iter("h1")) or len(element.text_content()) > _MAX_PRUNED_SHARE * total:
            continue
        chosen.append(element)
        inside.update(element.iter())
    return chosen


def strip_nosnippet(html: str, selectors: Sequence[str] = NOSNIPPET_SELECTORS) -> str:
    """Return `html` without the elements matching any CSS selector (default: [data-nosnippet])."""
    return _strip_counted(html, selectors)[0]


def _strip_counted(html: str, selectors: Sequence[str]) -> tuple[str, int]:
    """`html` without the elements matching ``selectors``, and how many were removed."""
    tree = _parse(html)
    if tree is None:
        return html, 0
    removed = _drop_matching(tree, selectors)
    if not removed:
        return html, 0
    return lxml.html.tostring(tree, encoding="unicode"), removed


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
    return sum(len(_WORD.findall(text)) for text in _text_nodes(tree, _INVISIBLE))


def _text_nodes(element: lxml.html.HtmlElement, skip: frozenset[str]) -> Iterator[str]:
    """The text nodes of ``element`` in document order, without what elements named in ``skip`` (and
    comments, processing instructions) hold. A tail is outside its element: it counts whenever the
    parent does. ``element``'s own tail is not part of it."""
    from lxml import etree

    skipped = 0  # how many skipped elements enclose the current one
    for event, node in etree.iterwalk(element, events=("start", "end")):
        skipping = not isinstance(node.tag, str) or node.tag in skip
        if event == "start":
            if skipping:
                skipped += 1
            elif not skipped and node.text:
                yield node.text
        else:
            if skipping:
                skipped -= 1
            if not skipped and node.tail and node is not element:
                yield node.tail


# --- hidden text ---------------------------------------------------------------

@dataclass(frozen=True)
class HiddenText:
    """Text a visitor does not see: how it is hidden, the text, and its words outside links and controls."""

    how: str
    text: str
    words: int


# Off screen: left/top/right/text-indent/margin 1000px (or 50em, 100vw) or more to the negative side.
_OFFSCREEN_PROPERTIES = frozenset({"left", "top", "right", "text-indent", "margin-left", "margin-top",
                                   "inset-inline-start"})
_OFFSCREEN = re.compile(r"-(\d+(?:\.\d+)?)(px|em|rem|vw|vh|%)?")
_OFFSCREEN_LIMITS = {"px": 1000, "": 1000, "em": 50, "rem": 50, "vw": 100, "vh": 100, "%": 100}
_ZERO = re.compile(r"[+-]?0*(?:\.0*)?(?:px|em|rem|pt|%|vw|vh|ex|ch)?")
_NAMED_COLORS = {"white": "#ffffff", "black": "#000000", "red": "#ff0000", "blue": "#0000ff",
                 "green": "#008000", "yellow": "#ffff00", "gray": "#808080", "grey": "#808080",
                 "silver": "#c0c0c0", "whitesmoke": "#f5f5f5", "snow": "#fffafa", "ivory": "#fffff0"}
TRANSPARENT = "transparent"
# Collapse mechanisms a page undoes for its visitor when a control names the element.
_COLLAPSING = frozenset({"hidden", "display:none", "visibility:hidden"})
# Hidden link and control text is a menu, a dropdown, a dialog's buttons: not prose,
# so it does not count towards the hidden words (it is dropped all the same).
_NOT_PROSE = frozenset({"a", "button", "nav", "select", "option", "label", "script", "style", "template"})
_SCRIPTS = frozenset({"script", "style"})


def _declarations(element: lxml.html.HtmlElement) -> dict[str, str]:
    """The inline style of ``element`` as {property: value}, lowercased, without !important."""
    style = element.get("style")
    if not style:
        return {}
    found = {}
    for declaration in style.lower().split(";"):
        name, colon, value = declaration.partition(":")
        if colon:
            value = value.replace("!important", "")
            # Spaces between a shorthand's parts are kept ('#fff url(x.png)'), those inside parentheses dropped.
            found[name.strip()] = " ".join(re.sub(r"\s+(?=[^()]*\))", "", value).split())
    return found


def _color(value: str) -> str | None:
    """A CSS colour as #rrggbb, 'transparent' for a fully transparent one, None when not understood."""
    value = _NAMED_COLORS.get(value.strip(), value.strip())
    if value == TRANSPARENT:
        return TRANSPARENT
    if re.fullmatch(r"#[0-9a-f]{3,4}", value):
        return TRANSPARENT if len(value) == 5 and value[4] == "0" else "#" + "".join(c * 2 for c in value[1:4])
    if re.fullmatch(r"#[0-9a-f]{6}(?:[0-9a-f]{2})?", value):
        return TRANSPARENT if value[7:] == "00" else value[:7]
    match = re.fullmatch(r"rgba?\((\d+),(\d+),(\d+)(?:,([\d.]+%?))?\)", value)
    if match:
        if match.group(4) is not None and float(match.group(4).rstrip("%") or 0) == 0:
            return TRANSPARENT
        return "#" + "".join(f"{min(255, int(v)):02x}" for v in match.groups()[:3])
    return None


def _background(declarations: Mapping[str, str]) -> str | None:
    value = declarations.get("background-color") or declarations.get("background")
    for token in (value or "").split():
        if (color := _color(token)) is not None:
            return color
    return None


@dataclass(frozen=True)
class _Inherited:
    """What an element's text inherits from its ancestors' inline styles."""

    font_zero: bool = False
    invisible: bool = False
    color: str | None = None
    background: str | None = None
    not_prose: bool = False

    def hiding(self) -> str | None:
        """How text in this state is hidden, or None when a visitor sees it."""
        if self.font_zero:
            return "font-size:0"
        if self.invisible:
            return "visibility:hidden"
        if self.color == TRANSPARENT:
            return "color:transparent"
        if self.color is not None and self.color == self.background:
            return "same colour as background"
        return None


def _hides_subtree(element: lxml.html.HtmlElement, declarations: Mapping[str, str]) -> str | None:
    """How ``element`` hides itself and everything in it (nothing inside can undo it), or None."""
    if element.tag == "template":
        return "template"
    hidden = element.get("hidden")
    if hidden is not None and hidden.strip().lower() != "until-found":
        return "hidden"
    if (element.get("aria-hidden") or "").strip().lower() == "true":
        return "aria-hidden"
    if declarations.get("display") == "none":
        return "display:none"
    opacity = declarations.get("opacity")
    if opacity is not None and _ZERO.fullmatch(opacity):
        return "opacity:0"
    for name in _OFFSCREEN_PROPERTIES & declarations.keys():
        match = _OFFSCREEN.fullmatch(declarations[name])
        if match and float(match.group(1)) >= _OFFSCREEN_LIMITS[match.group(2) or ""]:
            return "off-screen"
    return None


def _inherit(state: _Inherited, element: lxml.html.HtmlElement, declarations: Mapping[str, str]) -> _Inherited:
    changes: dict[str, Any] = {}
    if (size := declarations.get("font-size")) is not None:
        changes["font_zero"] = bool(_ZERO.fullmatch(size))
    if (visibility := declarations.get("visibility")) in ("hidden", "collapse", "visible"):
        changes["invisible"] = visibility != "visible"
    if "color" in declarations:
        changes["color"] = _color(declarations["color"])
    if (background := _background(declarations)) not in (None, TRANSPARENT):
        changes["background"] = background
    if element.tag in _NOT_PROSE or (element.get("role") or "").lower() in ("menu", "menubar", "navigation"):
        changes["not_prose"] = True
    return dataclasses.replace(state, **changes) if changes else state


def _revealable_ids(tree: lxml.html.HtmlElement) -> set[str]:
    """Ids of elements a control of the page opens: accordions, tabs, collapsed FAQ answers."""
    ids: set[str] = set()
    for node in tree.iter():
        if not isinstance(node.tag, str):
            continue
        ids.update((node.get("aria-controls") or "").split())
        for attr in ("data-target", "data-bs-target"):
            target = (node.get(attr) or "").strip()
            if target.startswith("#") and len(target) > 1:
                ids.add(target[1:])
    return ids


def _reveal(element: lxml.html.HtmlElement) -> None:
    element.attrib.pop("hidden", None)
    style = element.get("style")
    if style:
        kept = [d for d in style.split(";")
                if "".join(d.lower().split()) not in ("display:none", "visibility:hidden", "visibility:collapse")]
        element.set("style", ";".join(kept))


def _text_outside(element: lxml.html.HtmlElement, skip: frozenset[str]) -> str:
    """The text of ``element`` in document order, without what elements named in ``skip`` hold."""
    return " ".join("".join(_text_nodes(element, skip)).split())


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def find_hidden(tree: lxml.html.HtmlElement, *, drop: bool = False) -> list[HiddenText]:
    """The text of ``tree`` a visitor does not see (see the module docstring); removed from it when ``drop``.

    Hidden elements are reported whole (the outermost one); text an inherited
    style hides (``font-size:0``, ``visibility:hidden``, a colour) is reported
    per element, since a child may set its own size or colour again. With
    ``drop``, collapsed panels a control opens are revealed in place (their
    ``hidden`` attribute and inline ``display:none`` removed), so the extractor
    keeps them as the content they are.
    """
    body = tree.find(".//body")
    root = body if body is not None else tree
    revealable = _revealable_ids(root)
    found: list[HiddenText] = []
    doomed: list[lxml.html.HtmlElement] = []
    stack: list[tuple[lxml.html.HtmlElement, _Inherited]] = [(root, _Inherited())]
    while stack:
        element, inherited = stack.pop()
        declarations = _declarations(element)
        how = _hides_subtree(element, declarations) if element is not root else None
        reveal = (element.get("id") or "") in revealable
        if how in _COLLAPSING and reveal:
            how = None
        if how is not None:
            if how == "template":  # inert markup for scripts, not text shown or hidden from anyone
                found.append(HiddenText(how, "", 0))
            else:
                prose = "" if inherited.not_prose else _text_outside(element, _NOT_PROSE)
                found.append(HiddenText(how, _text_outside(element, _SCRIPTS), _words(prose)))
            doomed.append(element)
            continue
        state = _inherit(inherited, element, declarations)
        if reveal and state.invisible and not inherited.invisible:
            state = dataclasses.replace(state, invisible=False)
            if drop:
                _reveal(element)
        elif reveal and drop:
            _reveal(element)
        children = [child for child in element if isinstance(child.tag, str)]
        hiding = state.hiding()
        if hiding is not None and element.tag not in _SCRIPTS:
            # The element's own text nodes: its text and the tails of its children.
            own = " ".join(" ".join([element.text or "", *(child.tail or "" for child in element)]).split())
            if own:
                found.append(HiddenText(hiding, own, 0 if state.not_prose else _words(own)))
            if drop:
                element.text = None
                for child in element:
                    child.tail = None
                # What it hid is gone; trafilatura would drop a child that shows itself again with it.
                element.attrib.pop("style", None)
        stack.extend((child, state) for child in reversed(children))
    if drop:
        for element in doomed:
            if element.getparent() is not None:
                element.drop_tree()  # keeps the tail, which is outside the element
    return found


def hidden_text_of_page(body: str, content_type: str | None,
                        nosnippet_selectors: Sequence[str] = NOSNIPPET_SELECTORS) -> list[HiddenText]:
    """The hidden text of one stored page, as :func:`document_of_page` drops it (none for a PDF's text)."""
    if is_text_page(content_type):
        return []
    tree = _parse(body)
    if tree is None:
        return []
    _drop_matching(tree, tuple(nosnippet_selectors))
    return [h for h in find_hidden(tree) if h.how != "template"]


# --- titles and headings ---------------------------------------------------------

_MARKDOWN_EMPHASIS = re.compile(r"(\*{1,3}|`+)(?=\S)(.+?)(?<=\S)\1")
# trafilatura escapes markdown's special characters in text ('\<script>'): undone before tags are stripped.
_MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~])")


def plain_heading(value: str | None) -> str | None:
    """A title or heading as plain text: tags stripped, entities decoded, emphasis markers and spaces collapsed."""
    if not isinstance(value, str):
        return None
    text = _MARKDOWN_EMPHASIS.sub(r"\2", plain_text(_MARKDOWN_ESCAPE.sub(r"\1", value)))
    return " ".join(text.split()) or None


def _plain_headings(markdown: str) -> str:
    """``markdown`` with the text of every '#' heading line (outside code fences) made plain."""
    lines = markdown.split("\n")
    fence: str | None = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
            continue
        if fence is None and (match := _HEADING_TEXT.match(line)):
            text = plain_heading(match.group(2))
            # Only markup changes a line: trafilatura renders a code block's '# comment' lines
            # without a fence, and their spacing is the code's.
            if text != " ".join(match.group(2).split()):
                lines[i] = f"{match.group(1)} {text}" if text else match.group(1)
    return "\n".join(lines)


def _tidy_markdown(text: str) -> str:
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _trafilatura(tree: lxml.html.HtmlElement, url: str, favor_precision: bool) -> Any:
    """trafilatura's extraction of ``tree`` (which it prunes in place), None when it finds no text."""
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
    return extracted


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = [word.lower() for word in _WORD.findall(text)]
    return {tuple(words[i : i + 4]) for i in range(max(1, len(words) - 3))}


def _text_words(extracted: Any) -> int:
    return len(_WORD.findall(getattr(extracted, "text", None) or ""))


def _pruning_kept(pruned: Any, unpruned: Any) -> float:
    """The share of the unpruned extraction's word 4-grams that the pruned one still holds."""
    whole = _shingles(getattr(unpruned, "text", None) or "")
    if not whole:
        return 1.0
    return len(whole & _shingles(getattr(pruned, "text", None) or "")) / len(whole)


def extract_document(html: str, url: str, *, favor_precision: bool = True,
                     prune_boilerplate: bool | Sequence[str] = True) -> Document | None:
    """Extract the main content of `html` (fetched from `url`) as markdown.

    ``favor_precision`` (trafilatura's precision mode) and ``prune_boilerplate``
    (drop related/newsletter/share/cookie/comment/ad blocks before trafilatura
    runs: True for :data:`DEFAULT_BOILERPLATE_RULES`, False for none, or the
    names of :data:`BOILERPLATE_RULES` families) are sitekb's measured defaults;
    the extraction benchmarks compare them with trafilatura's own. Pruning never
    costs a page its article: when the pruned blocks hold as much prose as what
    is left and the pruned extraction keeps less than half of what trafilatura
    finds without pruning, the unpruned extraction is used; when precision mode
    keeps under 150 words and recall mode finds four times as many, recall mode's
    is used (both noted in ``Document.fallbacks``).

    None when no main content could be found (e.g. empty body or not HTML at all).
    """
    tree = _parse(html)
    if tree is None:
        return None
    nosnippet = _drop_matching(tree, NOSNIPPET_SELECTORS)
    _drop_unsafe_json_ld(tree, url)
    # Hidden text never reaches the document (nor counts as visible); the quality
    # gate measures it again from the stored page (hidden_text_of_page).
    hidden = sum(1 for h in find_hidden(tree, drop=True) if h.how != "template")
    # Counted before trafilatura runs: it prunes the tree it is given.
    visible_words = visible_word_count(tree)
    families = DEFAULT_BOILERPLATE_RULES if prune_boilerplate is True else tuple(prune_boilerplate or ())
    blocks = _boilerplate_blocks(tree, families)
    unpruned_tree = copy.deepcopy(tree) if blocks else None
    pruned_prose = sum(_words(_text_outside(block, _NOT_PROSE)) for block in blocks)
    for block in blocks:
        block.drop_tree()  # keeps the block's tail text, which belongs to its parent
    # trafilatura prunes the tree it is given: a copy stays for a second look in recall mode.
    spare = copy.deepcopy(tree) if favor_precision else None
    extracted = _trafilatura(tree, url, favor_precision)
    fallbacks: list[str] = []
    if unpruned_tree is not None:
        # Related grids and share bars are mostly links: only blocks with as much prose
        # as the pruned result may have held the article, and only then is it checked.
        if pruned_prose >= _text_words(extracted):
            spare_unpruned = copy.deepcopy(unpruned_tree) if favor_precision else None
            unpruned = _trafilatura(unpruned_tree, url, favor_precision)
            if unpruned is not None and _pruning_kept(extracted, unpruned) < _MIN_KEPT_AFTER_PRUNING:
                log.info("boilerplate pruning removed the article of %s (%d blocks): extracted without it",
                         url, len(blocks))
                extracted, tree, spare = unpruned, unpruned_tree, spare_unpruned
                fallbacks.append("unpruned")
    if spare is not None and _text_words(extracted) < _SHORT_PRECISE_WORDS:
        # Precision mode sometimes settles on a fragment (a reprints notice) next to the article.
        recalled = _trafilatura(spare, url, False)
        if _text_words(recalled) >= _RECALL_FACTOR * max(1, _text_words(extracted)):
            log.info("precision mode kept %d words of %s, recall mode %d: the recall extraction is used",
                     _text_words(extracted), url, _text_words(recalled))
            extracted = recalled
            fallbacks.append("favor_recall")
    if extracted is None:
        return None
    markdown = _plain_headings(_tidy_markdown(extracted.text))
    # Text without a single word (stray markup, binary junk) is not content.
    if not _WORD.search(markdown):
        return None

    title = plain_heading(extracted.title)
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
        fallbacks=tuple(fallbacks),
        nosnippet_removed=nosnippet,
        hidden_removed=hidden,
        boilerplate_blocks=0 if "unpruned" in fallbacks else len(blocks),
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
    markdown = _plain_headings(markdown)
    first = markdown.split("\n", 1)[0]
    title = plain_heading(first[2:]) if first.startswith("# ") else None
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
        html, cut = _strip_counted(body, selectors) if selectors else (body, 0)
        doc = extract_document(html, url)
        if doc is not None and cut:
            doc = dataclasses.replace(doc, nosnippet_removed=doc.nosnippet_removed + cut)
    if doc is None or not doc.markdown.strip():
        return None
    return doc


def extraction_inputs(nosnippet_selectors: Sequence[str]) -> str:
    """What decides a page's document besides its body: the extractor's version, trafilatura's own, the
    nosnippet selectors and the pruning rules. A document extracted with the same inputs from the same
    body is the document extraction would make again (the extract stage reuses it)."""
    key = json.dumps({"extractor": EXTRACTOR_VERSION, "selectors": list(nosnippet_selectors),
                      "rules": {name: BOILERPLATE_RULES[name] for name in DEFAULT_BOILERPLATE_RULES}},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def document_of_record(row: Mapping) -> Document:
    """A stored document (a ``sitekb.documents`` row as JSON) as the extractor made it."""
    cut = row.get("extraction") or {}
    return Document(
        url=row["url"], canonical_url=row.get("canonical_url"), title=row.get("title"),
        description=row.get("description"), author=row.get("author"), published=row.get("published"),
        modified=row.get("modified"), language=row.get("language"), tags=tuple(row.get("tags") or ()),
        markdown=row["markdown"], word_count=int(row["word_count"]), content_hash=row["content_hash"],
        visible_words=int(row.get("visible_words") or 0), fallbacks=tuple(cut.get("fallbacks") or ()),
        nosnippet_removed=int(cut.get("nosnippet_removed") or 0), hidden_removed=int(cut.get("hidden_removed") or 0),
        boilerplate_blocks=int(cut.get("boilerplate_blocks") or 0))


def with_markdown(doc: Document, markdown: str) -> Document:
    """``doc`` with its text replaced by ``markdown`` (a content owner's correction), made as extraction makes it.

    Headings become plain text, words are counted and the content hash is taken
    of the new text, so every later stage treats it like extracted text. The
    page's metadata and what the extractor measured on the page stay.
    """
    text = _plain_headings(_tidy_markdown(markdown))
    if not _WORD.search(text):
        raise ValueError("the corrected text has no words")
    if doc.title and not _HEADING_LINE.match(text):
        text = f"# {doc.title}\n\n{text}"
    return dataclasses.replace(doc, markdown=text, word_count=len(_WORD.findall(text)),
                               content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest())
