"""Incremental crawls: conditional GET, sitemap lastmod, pages that disappear, consent withdrawn.

Three real crawls of one fixture site into the real database, with the site
changed between them, and the extract (and chunk) stages run on the results.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sitekb import engine, stages
from sitekb.settings import Settings
from sitekb.stages.crawl import full_recrawl_due
from sitekb.store import ledger
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import html_reply, page, raw, sitemap

OLD = "2024-01-01"
FUTURE = "2999-01-01"


def build(web, entries, home_links, pages):
    web.reset()
    b = web.base_url
    web.add("/robots.txt", raw(f"User-agent: *\nSitemap: {b}/sitemap.xml\n".encode(), "text/plain"))
    web.add("/sitemap.xml", sitemap(b, entries))
    web.add("/", html_reply(page("Home", links=home_links), validators=False))
    for path, handler in pages.items():
        web.add(path, handler)


def stage(conn, name: str, run_id: str) -> None:
    settings = Settings.from_env()
    engine.execute(stages.get(name), engine.context(conn, settings, settings.database_url, run_id))


def extract(conn, config, run_id):
    # Each crawl of these tests is a run of its own that has ended once the next one starts.
    conn.execute("UPDATE sitekb.runs SET status = 'succeeded' WHERE site = %s AND status = 'running'", (config.name,))
    run = engine.start(conn, Settings.from_env(), config, run_id)
    stage(conn, "extract", run_id)
    return run, {url.removeprefix(config.base_url) for (url,) in conn.execute(
        "SELECT url FROM sitekb.documents WHERE run_id = %s", (run_id,))}


def test_unchanged_pages_cost_nothing_changed_and_gone_pages_are_handled(web, crawl, conn):
    config = site_config(web.base_url, use_sitemap_lastmod=True)   # opted in: lastmod skips requests
    links = ["/a.html", "/b.html", "/c.html", "/d.html", "/e.html", "/f.html"]
    pages = {path: html_reply(page(f"Page {path}", "<p>Version one. OPTOUTLATER</p>" if path == "/f.html" else ""))
             for path in links}
    build(web, [("/a.html", OLD), ("/b.html", None), ("/c.html", OLD), ("/d.html", OLD), ("/f.html", None)],
          links, pages)
    first = crawl(config, "inc-1")
    assert first.stats["full"] is True and first.stats["fetched"] == 7
    run1, docs1 = extract(conn, config, "inc-1")
    assert docs1 == {"/", *links}
    stage(conn, "chunk", run1.run_id)
    assert conn.execute("SELECT count(*) FROM sitekb.chunks WHERE url LIKE '%/f.html'").fetchone()[0] > 0
    a_fetched_at = first.pages["/a.html"]["fetched_at"]

    # The site changes: c is edited (newer lastmod), d is deleted (410), e is unlinked and
    # dropped from the sitemap, f opts out in a header on an otherwise unchanged body.
    pages["/c.html"] = html_reply(page("Page c", "<p>Version two</p>"))
    pages["/d.html"] = raw(b"gone", "text/plain", status=410)
    f_handler = html_reply(page("Page /f.html", "<p>Version one. OPTOUTLATER</p>"), headers={"X-Robots-Tag": "noai"})
    pages["/f.html"] = f_handler
    build(web, [("/a.html", OLD), ("/b.html", None), ("/c.html", FUTURE), ("/d.html", FUTURE), ("/f.html", None)],
          ["/a.html", "/b.html", "/c.html", "/d.html", "/f.html"], pages)
    second = crawl(config, "inc-2")

    assert second.stats["full"] is False
    requested = web.paths()
    assert "/a.html" not in requested                      # sitemap lastmod: not even a conditional GET
    assert "/e.html" not in requested                      # gone from sitemap and links
    assert second.stats["unchanged_by_sitemap"] == 1
    b_hit = web.hits_of("/b.html")[0]
    assert b_hit.headers.get("if-none-match") and b_hit.headers.get("if-modified-since")
    assert second.stats["not_modified"] == 2               # b by 304, a by lastmod
    pages2 = second.pages
    assert pages2["/a.html"]["last_run_id"] == "inc-2" and pages2["/a.html"]["fetched_at"] == a_fetched_at
    assert pages2["/b.html"]["last_run_id"] == "inc-2" and pages2["/b.html"]["body"] is not None
    assert "Version two" in pages2["/c.html"]["body"]
    assert pages2["/d.html"]["status"] == 410 and pages2["/d.html"]["body"] is None
    assert pages2["/e.html"]["last_run_id"] == "inc-1"
    assert pages2["/f.html"]["excluded_rule"] == "x-robots-tag" and pages2["/f.html"]["body"] is None
    assert second.exclusions["/f.html"] == {"x-robots-tag"}

    _, docs2 = extract(conn, config, "inc-2")
    assert docs2 == {"/", "/a.html", "/b.html", "/c.html"}  # d (410), e (gone), f (opted out) dropped out
    # Consent withdrawn: nothing of f is left in any run's documents or chunks.
    for table, column in (("documents", "markdown"), ("chunks", "text"), ("pages", "body")):
        left = conn.execute(f"SELECT count(*) FROM sitekb.{table} WHERE {column} LIKE '%OPTOUTLATER%'").fetchone()[0]
        assert left == 0, table

    web.hits.clear()
    third = crawl(config, "inc-3", full=True)
    assert third.stats["full"] is True and third.stats["not_modified"] == 0
    a_hits = web.hits_of("/a.html")
    assert len(a_hits) == 1 and "if-none-match" not in a_hits[0].headers


def test_full_recrawl_falls_due_after_the_configured_days(conn):
    config = site_config("http://127.0.0.1:9", full_recrawl_days=7)
    assert full_recrawl_due(conn, config) == "no full crawl recorded yet"
    ledger.record_crawl(conn, config.name, "r-full", {"full": True, "fetched": 3})
    assert full_recrawl_due(conn, config) is None
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert "8 days old" in full_recrawl_due(conn, config, now=later)
    never = site_config("http://127.0.0.1:9", full_recrawl_days=None)
    assert full_recrawl_due(conn, never, now=later) is None


def test_a_new_opt_out_on_a_page_whose_sitemap_lastmod_did_not_move_is_seen_on_the_next_run(web, crawl, conn):
    # By default every page is asked again each run, whatever its sitemap lastmod says: a
    # conditional request, a 304 while unchanged, and the new body once the owner opts out.
    config = site_config(web.base_url)
    pages = {"/a.html": html_reply(page("Page a", "<p>Version one.</p>")),
             "/b.html": html_reply(page("Page b", "<p>Also here.</p>"))}
    build(web, [("/a.html", OLD), ("/b.html", OLD)], ["/a.html", "/b.html"], pages)
    crawl(config, "recheck-1")
    pages["/a.html"] = html_reply(page("Page a", "<p>Version one.</p>", head='<meta name="robots" content="noai">'))
    build(web, [("/a.html", OLD), ("/b.html", OLD)], ["/a.html", "/b.html"], pages)   # lastmod unchanged
    web.hits.clear()
    second = crawl(config, "recheck-2")
    assert second.stats["unchanged_by_sitemap"] == 0
    assert web.hits_of("/b.html")[0].headers.get("if-none-match")      # unchanged: a cheap 304
    assert second.stats["not_modified"] >= 1
    assert second.exclusions["/a.html"] == {"robots-meta"}
    assert second.pages["/a.html"]["body"] is None


def test_a_404_page_drops_out_of_the_next_snapshot(web, crawl, conn):
    config = site_config(web.base_url)
    build(web, [], ["/kept.html", "/removed.html"],
          {"/kept.html": html_reply(page("Kept")), "/removed.html": html_reply(page("Removed"))})
    crawl(config, "gone-1")
    _, docs = extract(conn, config, "gone-1")
    assert docs == {"/", "/kept.html", "/removed.html"}
    del web.routes["/removed.html"]                        # now a 404, still linked
    second = crawl(config, "gone-2")
    assert second.pages["/removed.html"]["status"] == 404 and second.stats["errors"] == {"http_404": 1}
    _, docs = extract(conn, config, "gone-2")
    assert docs == {"/", "/kept.html"}
