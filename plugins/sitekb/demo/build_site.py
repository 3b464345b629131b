"""Generate the static "Northwind Signal" demo website under ``site/``.

The article texts live in ``content/articles/*.txt`` (a tiny front-matter +
markdown-ish format, see ``parse_source``); the special pages (transcript,
tag page, private roadmap, syndicated copy) are described in ``content/`` too
or built here.  The generated HTML is committed, so this script only needs to
be re-run after editing the content::

    python plugins/sitekb/demo/build_site.py

Output is deterministic (no timestamps other than the dates in the content).
Standard library only.
"""

from __future__ import annotations

import html
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTENT_DIR = HERE / "content"
SITE_DIR = HERE / "site"

SITE_NAME = "Northwind Signal"
LEAD_SCORING_SLUG = "lead-scoring-fundamentals"
SYNDICATED_SOURCE_SLUG = "utm-governance"
SYNDICATED_SLUG = "utm-governance-syndicated"
BROKEN_LINK = "/articles/this-page-does-not-exist.html"
REDIRECT_LINK = "/old/lead-scoring.html"
PRIVATE_LINK = "/private/roadmap.html"
VIDEO_PATH = "/videos/webinar-lead-scoring-transcript.html"
TAG_PATH = "/tags/martech.html"

# Pages whose slug is a special case are still normal articles for the index.
SPECIAL_ARTICLE_SLUGS = {"internal-pricing-playbook", "partner-program-draft", SYNDICATED_SLUG}


# --------------------------------------------------------------------------- #
# Source parsing
# --------------------------------------------------------------------------- #
@dataclass
class Article:
    slug: str
    title: str
    description: str
    author: str
    date: str  # YYYY-MM-DD
    body_md: str
    robots: str | None = None
    canonical: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/articles/{self.slug}.html"

    @property
    def canonical_href(self) -> str:
        return self.canonical or self.path


def parse_source(text: str, slug: str) -> Article:
    """``key: value`` lines, a ``---`` line, then the markdown-ish body."""
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise ValueError(f"{slug}: missing '---' separator")
    meta: dict[str, str] = {}
    for line in head.strip().splitlines():
        key, _, value = line.partition(":")
        meta[key.strip().lower()] = value.strip()
    for required in ("title", "description", "author", "date"):
        if not meta.get(required):
            raise ValueError(f"{slug}: missing {required}")
    date.fromisoformat(meta["date"])  # validate
    return Article(
        slug=slug,
        title=meta.pop("title"),
        description=meta.pop("description"),
        author=meta.pop("author"),
        date=meta.pop("date"),
        robots=meta.pop("robots", None),
        canonical=meta.pop("canonical", None),
        body_md=body.strip() + "\n",
        meta=meta,
    )


_LINK_RE = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD_RE = re.compile(r"\*\*(.+?)\*\*")
_CODE_RE = re.compile(r"`([^`]+)`")


def inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = _CODE_RE.sub(r"<code>\1</code>", out)
    out = _BOLD_RE.sub(r"<strong>\1</strong>", out)
    out = _LINK_RE.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', out)
    return out


def markdown_to_html(md: str) -> str:
    """Paragraphs, ##/### headings, -/1. lists and > quotes; inline links/bold/code."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", md.strip()) if b.strip()]
    parts: list[str] = []
    for block in blocks:
        lines = block.splitlines()
        if block.startswith("### "):
            parts.append(f"<h3>{inline(block[4:].strip())}</h3>")
        elif block.startswith("## "):
            parts.append(f"<h2>{inline(block[3:].strip())}</h2>")
        elif all(line.startswith("- ") for line in lines):
            items = "".join(f"\n  <li>{inline(line[2:].strip())}</li>" for line in lines)
            parts.append(f"<ul>{items}\n</ul>")
        elif all(re.match(r"\d+\. ", line) for line in lines):
            items = "".join(
                f"\n  <li>{inline(line.split('. ', 1)[1].strip())}</li>" for line in lines
            )
            parts.append(f"<ol>{items}\n</ol>")
        elif all(line.startswith("> ") for line in lines):
            text = " ".join(line[2:].strip() for line in lines)
            parts.append(f"<blockquote><p>{inline(text)}</p></blockquote>")
        else:
            text = " ".join(line.strip() for line in lines)
            parts.append(f"<p>{inline(text)}</p>")
    return "\n".join(parts)


def word_count(md: str) -> int:
    return len(re.findall(r"[A-Za-z0-9][\w'’%.-]*", md))


# --------------------------------------------------------------------------- #
# Page chrome
# --------------------------------------------------------------------------- #
def human_date(iso: str) -> str:
    d = date.fromisoformat(iso)
    return f"{d.strftime('%B')} {d.day}, {d.year}"


def head(
    title: str,
    description: str,
    canonical: str,
    *,
    author: str | None = None,
    published: str | None = None,
    robots: str | None = None,
    og_type: str = "website",
) -> str:
    esc = html.escape
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '  <meta charset="utf-8">',
        '  <meta name="viewport" content="width=device-width, initial-scale=1">',
        f"  <title>{esc(title)} | {SITE_NAME}</title>",
        f'  <meta name="description" content="{esc(description)}">',
    ]
    if author:
        lines.append(f'  <meta name="author" content="{esc(author)}">')
    if published:
        lines.append(f'  <meta property="article:published_time" content="{published}T09:00:00Z">')
    if robots:
        lines.append(f'  <meta name="robots" content="{esc(robots)}">')
    lines += [
        f'  <meta property="og:site_name" content="{SITE_NAME}">',
        f'  <meta property="og:type" content="{og_type}">',
        f'  <meta property="og:title" content="{esc(title)}">',
        f'  <link rel="canonical" href="{esc(canonical)}">',
        '  <link rel="stylesheet" href="/assets/site.css">',
        "</head>",
    ]
    return "\n".join(lines)


COOKIE_BANNER = """<div class="cookie-banner" id="cookie-consent" role="dialog" aria-label="Cookie consent">
  <p>We use cookies to understand how our articles are read and to remember your preferences.
  Strictly necessary cookies are always on; analytics cookies are only set if you agree.</p>
  <button type="button" class="cookie-accept">Accept all</button>
  <button type="button" class="cookie-reject">Reject non-essential</button>
  <button type="button" class="cookie-settings">Cookie settings</button>
</div>"""

HEADER = f"""<header class="site-header">
  <a class="logo" href="/">{SITE_NAME}</a>
  <nav class="main-nav" aria-label="Main menu">
    <ul>
      <li><a href="/">Home</a></li>
      <li><a href="/articles/">Articles</a></li>
      <li><a href="{VIDEO_PATH}">Webinars</a></li>
      <li><a href="{TAG_PATH}">Topics</a></li>
      <li><a href="/articles/campaign-intake-process.html">Work with us</a></li>
    </ul>
  </nav>
</header>"""

NEWSLETTER = """<section class="newsletter" aria-labelledby="newsletter-title">
  <h2 id="newsletter-title">Subscribe to our newsletter</h2>
  <p>One practical marketing-operations idea every other Thursday. No spam, unsubscribe in one click.</p>
  <form class="newsletter-form" action="#" method="get">
    <label for="newsletter-email">Work email</label>
    <input id="newsletter-email" type="email" name="email" placeholder="you@company.com">
    <button type="submit">Subscribe</button>
  </form>
</section>"""

FOOTER = f"""<footer class="site-footer">
  <nav aria-label="Footer menu">
    <ul>
      <li><a href="/articles/">All articles</a></li>
      <li><a href="{VIDEO_PATH}">Webinar recordings</a></li>
      <li><a href="{TAG_PATH}">Martech topics</a></li>
      <li><a href="{PRIVATE_LINK}">Team roadmap</a></li>
      <li><a href="/sitemap.xml">Sitemap</a></li>
    </ul>
  </nav>
  <p>&copy; 2026 {SITE_NAME} Consulting Ltd. Marketing operations, measured.</p>
  <p class="legal">Northwind Signal is a fictional company. All figures on this demo site are illustrative.</p>
</footer>"""


def page(head_html: str, main_html: str, *, body_class: str = "") -> str:
    cls = f' class="{body_class}"' if body_class else ""
    return (
        f"{head_html}\n<body{cls}>\n{COOKIE_BANNER}\n{HEADER}\n<main>\n{main_html}\n</main>\n"
        f"{FOOTER}\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- #
# Builders
# --------------------------------------------------------------------------- #
def load_articles() -> list[Article]:
    articles = []
    for src in sorted((CONTENT_DIR / "articles").glob("*.txt")):
        articles.append(parse_source(src.read_text(encoding="utf-8"), src.stem))
    return articles


def make_syndicated(original: Article) -> Article:
    """A near-duplicate copy of ``original`` as republished by a partner."""
    paragraphs = re.split(r"\n\s*\n", original.body_md.strip())
    intro = (
        "This guide is republished with permission as part of our partner content "
        "exchange, because the question of campaign tagging comes up in almost every "
        "analytics review we run with member companies."
    )
    origin = (
        f"Originally published on {SITE_NAME} on {human_date(original.date)} at "
        f"[{original.path}]({original.path})."
    )
    body = "\n\n".join([origin, intro] + paragraphs[1:]) + "\n"
    # "A couple of words changed", as syndication edits tend to do.
    body = body.replace("Every team", "Every marketing team", 1)
    body = body.replace("builder spreadsheet", "builder workbook", 1)
    return Article(
        slug=SYNDICATED_SLUG,
        title=original.title + " (Partner Edition)",
        description="Syndicated copy: " + original.description,
        author=original.author,
        date="2026-03-02",
        body_md=body,
        canonical=original.path,
    )


def related_for(article: Article, regular: list[Article]) -> list[Article]:
    slugs = [a.slug for a in regular]
    if article.slug in slugs:
        i = slugs.index(article.slug)
    else:
        i = sum(ord(c) for c in article.slug) % len(regular)
    picks: list[Article] = []
    for step in (1, 5, 11, 17):
        cand = regular[(i + step) % len(regular)]
        if cand.slug != article.slug and cand not in picks:
            picks.append(cand)
    return picks[:3]


def render_article(article: Article, related: list[Article]) -> str:
    words = word_count(article.body_md)
    minutes = max(1, round(words / 200))
    related_items = "\n".join(
        f'    <li><a href="{a.path}">{html.escape(a.title)}</a></li>' for a in related
    )
    main = f"""<article class="post">
  <h1>{html.escape(article.title)}</h1>
  <p class="byline">By {html.escape(article.author)} &middot; <time datetime="{article.date}">{human_date(article.date)}</time> &middot; {minutes} min read</p>
{markdown_to_html(article.body_md)}
  <p class="tags">Filed under <a href="{TAG_PATH}">martech</a></p>
</article>
<aside class="related" aria-labelledby="related-title">
  <h2 id="related-title">Related articles</h2>
  <ul>
{related_items}
  </ul>
</aside>
{NEWSLETTER}"""
    h = head(
        article.title,
        article.description,
        article.canonical_href,
        author=article.author,
        published=article.date,
        robots=article.robots,
        og_type="article",
    )
    return page(h, main, body_class="article-page")


def render_articles_index(articles: list[Article]) -> str:
    regular = [a for a in articles if a.slug not in SPECIAL_ARTICLE_SLUGS]
    special = [a for a in articles if a.slug in SPECIAL_ARTICLE_SLUGS]

    def items(lst: list[Article]) -> str:
        return "\n".join(
            f'    <li><a href="{a.path}">{html.escape(a.title)}</a> '
            f'<span class="meta">{human_date(a.date)} &middot; {html.escape(a.author)}</span>'
            f"<br>{html.escape(a.description)}</li>"
            for a in lst
        )

    main = f"""<section class="article-index">
  <h1>All articles</h1>
  <p>Every guide we have published on marketing operations, martech and revenue data, newest first.</p>
  <ul class="article-list">
{items(sorted(regular, key=lambda a: (a.date, a.slug), reverse=True))}
  </ul>
  <h2>Drafts, internal notes and partner editions</h2>
  <ul class="article-list">
{items(special)}
  </ul>
</section>
{NEWSLETTER}"""
    h = head(
        "All articles",
        "Index of every Northwind Signal article on marketing operations and martech.",
        "/articles/",
    )
    return page(h, main, body_class="index-page")


def render_home(articles: list[Article]) -> str:
    regular = [a for a in articles if a.slug not in SPECIAL_ARTICLE_SLUGS]
    latest = sorted(regular, key=lambda a: (a.date, a.slug), reverse=True)[:8]
    latest_items = "\n".join(
        f'    <li><a href="{a.path}">{html.escape(a.title)}</a> &mdash; {html.escape(a.description)}</li>'
        for a in latest
    )
    main = f"""<section class="hero">
  <h1>Marketing operations, measured.</h1>
  <p>{SITE_NAME} is a small marketing-operations consultancy. We help B2B teams clean up their
  CRM, make attribution believable and run campaigns that do not break on launch day. This is
  where we write down what we learn.</p>
  <p><a class="button" href="/articles/">Browse all articles</a></p>
</section>
<section class="latest">
  <h2>Latest articles</h2>
  <ul>
{latest_items}
  </ul>
</section>
<section class="start-here">
  <h2>Start here</h2>
  <ul>
    <li><a href="{REDIRECT_LINK}">Our classic lead scoring guide</a></li>
    <li><a href="/articles/utm-governance.html">UTM governance in one afternoon</a></li>
    <li><a href="{VIDEO_PATH}">Webinar recording: lead scoring that sales actually trusts</a></li>
    <li><a href="{TAG_PATH}">Everything tagged martech</a></li>
  </ul>
</section>
{NEWSLETTER}"""
    h = head(
        "Marketing operations consultancy and martech blog",
        "Northwind Signal writes practical guides on marketing operations, CRM data, attribution and martech.",
        "/",
    )
    return page(h, main, body_class="home-page")


def render_video() -> str:
    src = (CONTENT_DIR / "webinar-transcript.txt").read_text(encoding="utf-8").strip()
    paragraphs = "\n".join(f"    <p>{html.escape(p.strip(), quote=False)}</p>" for p in src.split("\n\n"))
    main = f"""<article class="video">
  <h1>Webinar recording: Lead scoring that sales actually trusts</h1>
  <p class="byline">Recorded live on <time datetime="2026-02-19">February 19, 2026</time> &middot; 41 minutes</p>
  <div class="video-player" data-video-id="nws-2026-02-19-lead-scoring" role="region" aria-label="Video player">
    <p class="video-placeholder">[Video player: 41:07]</p>
  </div>
  <p>Missed the live session? Watch the recording above. The transcript below was generated
  automatically and has not been edited. For the written version, read
  <a href="/articles/{LEAD_SCORING_SLUG}.html">Lead Scoring Fundamentals</a>.</p>
  <section class="transcript">
    <h2>Automatic transcript</h2>
{paragraphs}
  </section>
</article>
{NEWSLETTER}"""
    h = head(
        "Webinar recording: Lead scoring that sales actually trusts",
        "Recording and automatic transcript of our February 2026 lead scoring webinar.",
        VIDEO_PATH,
        published="2026-02-19",
        og_type="video.other",
    )
    return page(h, main, body_class="video-page")


def render_tag_page() -> str:
    # Deliberately thin: a title and a handful of links, nothing else.
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tag: martech | {SITE_NAME}</title>
  <link rel="canonical" href="{TAG_PATH}">
</head>
<body>
<h1>Tag: martech</h1>
<ul>
  <li><a href="/articles/cdp-selection-checklist.html">CDP selection checklist</a></li>
  <li><a href="/articles/martech-stack-rationalization.html">Stack rationalization</a></li>
  <li><a href="/articles/marketing-automation-audit.html">Automation audits</a></li>
  <li><a href="/articles/martech-vendor-renewals.html">Vendor renewals</a></li>
</ul>
</body>
</html>
"""


def render_private_roadmap() -> str:
    main = """<article class="internal">
  <h1>Team roadmap 2026 (internal)</h1>
  <p>This page is for the Northwind Signal team only and is excluded from search engines and
  crawlers via robots.txt.</p>
  <h2>Q3 priorities</h2>
  <ul>
    <li>Launch the attribution health-check as a fixed-price, three-week engagement.</li>
    <li>Hire a second marketing data engineer for the warehouse practice.</li>
    <li>Retire the legacy newsletter platform by September 30.</li>
  </ul>
  <h2>Q4 priorities</h2>
  <ul>
    <li>Publish the annual lead-routing benchmark with at least 60 participating companies.</li>
    <li>Pilot a retainer tier for consent-management operations.</li>
  </ul>
</article>"""
    h = head(
        "Team roadmap 2026 (internal)",
        "Internal roadmap for the Northwind Signal team.",
        PRIVATE_LINK,
        robots="noindex, nofollow",
    )
    return page(h, main, body_class="internal-page")


def render_sitemap(articles: list[Article]) -> str:
    latest = max(a.date for a in articles)
    entries: list[tuple[str, str]] = [
        ("/", latest),
        ("/articles/", latest),
        (TAG_PATH, latest),
        (VIDEO_PATH, "2026-02-19"),
    ]
    entries += [(a.path, a.date) for a in sorted(articles, key=lambda a: a.slug)]
    urls = "\n".join(
        f"  <url>\n    <loc>{{{{BASE_URL}}}}{path}</loc>\n    <lastmod>{lastmod}</lastmod>\n  </url>"
        for path, lastmod in entries
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{urls}\n</urlset>\n"
    )


ROBOTS = """User-agent: *
Disallow: /private/

Sitemap: {{BASE_URL}}/sitemap.xml
"""

CSS = """body { font-family: Georgia, serif; max-width: 46rem; margin: 0 auto; padding: 0 1rem; color: #1b2733; }
.site-header, .site-footer { font-family: Helvetica, Arial, sans-serif; }
.site-header nav ul, .site-footer nav ul { list-style: none; padding: 0; display: flex; gap: 1rem; }
.logo { font-weight: bold; color: #1f4e79; text-decoration: none; }
.cookie-banner { position: fixed; bottom: 0; left: 0; right: 0; background: #f3f5f7; padding: 1rem; font-size: .85rem; }
.newsletter, .related { background: #eef3f8; padding: 1rem; margin: 2rem 0; }
.byline, .meta { color: #5b6773; font-size: .9rem; }
"""


def build(site_dir: Path = SITE_DIR) -> dict[str, int]:
    articles = load_articles()
    by_slug = {a.slug: a for a in articles}
    articles.append(make_syndicated(by_slug[SYNDICATED_SOURCE_SLUG]))
    regular = [a for a in articles if a.slug not in SPECIAL_ARTICLE_SLUGS]

    if site_dir.exists():
        shutil.rmtree(site_dir)
    (site_dir / "articles").mkdir(parents=True)

    def write(rel: str, text: str) -> None:
        target = site_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="\n")

    counts: dict[str, int] = {}
    for a in articles:
        write(f"articles/{a.slug}.html", render_article(a, related_for(a, regular)))
        counts[a.slug] = word_count(a.body_md)
    write("articles/index.html", render_articles_index(articles))
    write("index.html", render_home(articles))
    write(VIDEO_PATH.lstrip("/"), render_video())
    write(TAG_PATH.lstrip("/"), render_tag_page())
    write(PRIVATE_LINK.lstrip("/"), render_private_roadmap())
    write("sitemap.xml", render_sitemap(articles))
    write("robots.txt", ROBOTS)
    write("assets/site.css", CSS)
    return counts


def main() -> int:
    counts = build()
    short = {slug: n for slug, n in counts.items() if n < 300}
    print(f"built {len(counts)} articles into {SITE_DIR}")
    print(f"words per article: min {min(counts.values())}, max {max(counts.values())}")
    for slug, n in sorted(short.items()):
        print(f"  SHORT: {slug} ({n} words)")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
