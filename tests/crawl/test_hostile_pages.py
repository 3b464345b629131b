"""Hostile pages: one page written to break the pipeline must not fail the refresh.

Real crawls of fixture sites on 127.0.0.1 into the real database, then the
extract stage: JSON-LD and a tdmrep.json nested 10,000 deep (``json.loads``
raises RecursionError on them), a NUL byte past the first 2 KB (which Postgres
text cannot hold), and a sitemap flood (200,000 URLs for a crawl of a few
pages, plus a page linking thousands of URLs past the page budget).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sitekb import engine, stages
from sitekb.extract import extract_document
from sitekb.settings import Settings
from sitekb.store.pages import Withdrawn
from sitekb_crawlers.items import ExclusionItem, PageItem
from sitekb_crawlers.pipelines import MAX_EXCLUSIONS_PER_RULE, PostgresPipeline
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import html_reply, nested_json, page, raw, redirect, sitemap_flood


def extract(conn, config, run_id) -> dict[str, dict]:
    """Run the extract stage on the crawl of ``run_id``; its documents by path."""
    conn.execute("UPDATE sitekb.runs SET status = 'succeeded' WHERE site = %s AND status = 'running'", (config.name,))
    engine.start(conn, Settings.from_env(), config, run_id)
    settings = Settings.from_env()
    engine.execute(stages.get("extract"), engine.context(conn, settings, settings.database_url, run_id))
    rows = conn.execute("SELECT url, title, markdown FROM sitekb.documents WHERE run_id = %s", (run_id,))
    return {url.removeprefix(config.base_url): {"title": title, "markdown": markdown} for url, title, markdown in rows}


def build(web, links: list[str]) -> None:
    web.add("/robots.txt", raw(b"User-agent: *\nAllow: /\n", "text/plain"))
    web.add("/", html_reply(page("Home", links=links)))
    web.add("/plain.html", html_reply(page("Plain page")))


def test_json_ld_nested_10000_deep_is_ignored_and_the_page_kept(web, crawl, conn):
    build(web, ["/deep-jsonld.html", "/plain.html"])
    script = f'<script type="application/ld+json">{nested_json(10_000)}</script>'
    web.add("/deep-jsonld.html", html_reply(page("Deep JSON-LD", head=script)))
    config = site_config(web.base_url)

    result = crawl(config, "hostile-jsonld")
    assert result.stats["fetched"] == 3
    assert result.pages["/deep-jsonld.html"]["status"] == 200
    assert result.pages["/deep-jsonld.html"]["body"].count('"about"') == 10_000

    docs = extract(conn, config, "hostile-jsonld")
    assert set(docs) == {"/", "/deep-jsonld.html", "/plain.html"}
    assert docs["/deep-jsonld.html"]["title"] == "Deep JSON-LD"
    assert "Marketing operations" in docs["/deep-jsonld.html"]["markdown"]


def test_a_nul_byte_after_2_kb_is_removed_and_the_page_stored(web, crawl, conn):
    build(web, ["/nul.html", "/plain.html"])
    filler = "<p>" + "Padding words about campaign calendars. " * 80 + "</p>"   # > 2 KB before the NUL
    web.add("/nul.html", html_reply(page("With NUL", filler + "<p>Before\x00After the NUL byte.</p>")))
    config = site_config(web.base_url)

    result = crawl(config, "hostile-nul")
    assert result.stats["fetched"] == 3
    body = result.pages["/nul.html"]["body"]
    assert body.index("Before") > 2048 and "\x00" not in body and "BeforeAfter the NUL byte." in body
    assert result.stats["bad_input"]["unstorable_chars"] == 1
    assert result.pages["/plain.html"]["body"] is not None

    docs = extract(conn, config, "hostile-nul")
    assert set(docs) == {"/", "/nul.html", "/plain.html"}
    assert "BeforeAfter the NUL byte." in docs["/nul.html"]["markdown"]


def test_a_tdmrep_json_nested_10000_deep_is_ignored(web, crawl, conn):
    build(web, ["/plain.html"])
    web.add("/.well-known/tdmrep.json", raw(("[" * 10_000 + "]" * 10_000).encode(), "application/json"))
    config = site_config(web.base_url)

    result = crawl(config, "hostile-tdmrep")
    assert result.stats["fetched"] == 2
    assert result.stats["bad_input"]["tdmrep_too_deep"] == 1
    assert "tdmrep" in result.stats["error_examples"]
    assert set(extract(conn, config, "hostile-tdmrep")) == {"/", "/plain.html"}


def test_a_sitemap_flood_ends_quickly_with_a_bounded_ledger(web, crawl, conn):
    b = web.base_url
    flood_links = [f"/linked/{n}.html" for n in range(MAX_EXCLUSIONS_PER_RULE + 1500)]
    web.add("/robots.txt", raw(f"User-agent: *\nSitemap: {b}/sitemap.xml\n".encode(), "text/plain"))
    web.add("/sitemap.xml", sitemap_flood(b, 200_000))
    web.add("/", html_reply(page("Home", links=flood_links)))
    web.add_prefix("/flood/", lambda request: html_reply(page(f"Flood {request.bare_path}"))(request))
    web.add_prefix("/linked/", redirect("/"))
    config = site_config(b, max_pages=5)

    started = time.monotonic()
    result = crawl(config, "hostile-flood")
    assert time.monotonic() - started < 45   # unbounded, it took 90 s here (a million URLs: hours)
    assert result.stats["fetched"] == 5
    assert result.stats["sitemaps_truncated"] == 1
    # Far fewer than 200,000 sitemap URLs were even considered, let alone requested.
    assert result.stats["requests"] < 20
    assert len([p for p in web.paths() if p.startswith("/flood/")]) <= 5

    per_rule = dict(conn.execute(
        "SELECT rule, count(*) FROM sitekb.exclusions WHERE run_id = 'hostile-flood' GROUP BY rule").fetchall())
    assert per_rule["max-pages"] == MAX_EXCLUSIONS_PER_RULE
    assert all(count <= MAX_EXCLUSIONS_PER_RULE for count in per_rule.values())
    # Every refusal is still counted; only the ledger rows are bounded.
    refused = result.stats["skipped"]["max-pages"]
    assert refused > MAX_EXCLUSIONS_PER_RULE
    assert result.stats["exclusions_unrecorded"] == refused - MAX_EXCLUSIONS_PER_RULE


@pytest.mark.parametrize("script_type", ["application/ld+json", "application/settings+json"])
@pytest.mark.parametrize("where", ["head", "body"])
def test_extraction_ignores_deep_json_in_every_script_trafilatura_parses(script_type, where):
    script = f'<script type="{script_type}">{"[" * 10_000 + "]" * 10_000}</script>'
    html = page("Deep script", head=script) if where == "head" else page("Deep script", body=script)
    for options in ({}, {"favor_precision": False, "prune_boilerplate": False}):
        document = extract_document(html, "http://127.0.0.1/deep.html", **options)
        assert document.title == "Deep script" and "Marketing operations" in document.markdown


def test_the_pipeline_cleans_items_and_keeps_withdrawals_past_the_ledger_bound():
    pipeline = PostgresPipeline("unused", "fixture", "bound", batch_size=10**6, max_exclusions_per_rule=2)
    for n in range(4):
        asyncio.run(pipeline.process_item(ExclusionItem(f"http://x/{n}", "robots-txt", "disallowed", purge=True)))
        asyncio.run(pipeline.process_item(ExclusionItem(f"http://x/{n}", "max-pages", "limit")))
    asyncio.run(pipeline.process_item(PageItem("http://x/nul", 200, body="a\x00b", headers={"etag": "\x00e"})))
    kept = [(type(e).__name__, e.url, e.rule) for e in pipeline.buffer[:-1]]
    assert kept == [("ExclusionItem", "http://x/0", "robots-txt"), ("ExclusionItem", "http://x/0", "max-pages"),
                    ("ExclusionItem", "http://x/1", "robots-txt"), ("ExclusionItem", "http://x/1", "max-pages"),
                    ("Withdrawn", "http://x/2", "robots-txt"), ("Withdrawn", "http://x/3", "robots-txt")]
    assert all(isinstance(e, (ExclusionItem, Withdrawn)) for e in pipeline.buffer[:-1])
    cleaned = pipeline.buffer[-1]
    assert cleaned.body == "ab" and cleaned.headers == {"etag": "e"}
