"""Real crawls of small fixture sites, one policy each: robots.txt variants and Crawl-delay,
private addresses, opt-in mode, the page budget, an endless calendar, and the stats command."""

from __future__ import annotations

import json

import pytest

from sitekb.errors import CrawlFailed
from tests.crawl.conftest import AGENT, site_config
from tests.crawl.fixture_site import html_reply, page, raw


def linked_site(web, robots: bytes | None, paths=("/public.html", "/private/x.html", "/late/y.html")):
    web.reset()
    if robots is not None:
        web.add("/robots.txt", raw(robots, "text/plain"))
    web.add("/", html_reply(page("Home", links=list(paths))))
    for path in paths:
        web.add(path, html_reply(page(f"Page {path}")))


RULES = b"User-agent: *\nDisallow: /private/\n"


@pytest.mark.parametrize("variant", ["missing", "huge", "broken", "ok"])
def test_robots_txt_variants_never_stop_the_crawl(web, crawl, variant):
    robots = {
        "missing": None,
        "huge": RULES + b"# filler line of a generated robots.txt\n" * 20_000 + b"Disallow: /late/\n",
        "broken": bytes(range(256)) * 10,
        "ok": RULES + b"Disallow: /late/\n",
    }[variant]
    linked_site(web, robots)
    result = crawl(site_config(web.base_url), f"robots-{variant}")
    fetched = {url for url, row in result.pages.items() if row["body"]}
    robots_stats = result.stats["robots"]
    if variant in ("missing", "broken"):
        assert fetched == {"/", "/public.html", "/private/x.html", "/late/y.html"}   # no rules
        assert robots_stats == {variant: 1}
    elif variant == "huge":
        # The first 500 KiB are obeyed; a rule beyond them is not read (RFC 9309 2.5).
        assert fetched == {"/", "/public.html", "/late/y.html"}
        assert result.exclusions["/private/x.html"] == {"robots-txt"}
        assert robots_stats == {"huge": 1}
    else:
        assert fetched == {"/", "/public.html"}
        assert robots_stats == {}
    assert web.paths().count("/robots.txt") == 1      # fetched once, for rules and Sitemap lines


def test_unreachable_robots_txt_means_complete_disallow(web, crawl, conn):
    linked_site(web, None)
    web.add("/robots.txt", raw(b"oops", "text/plain", status=500))
    with pytest.raises(CrawlFailed, match="RFC 9309"):
        crawl(site_config(web.base_url), "robots-5xx")
    assert set(web.paths()) == {"/", "/robots.txt", "/.well-known/tdmrep.json"}  # "/" once: the reachability check
    stored = conn.execute("SELECT stats FROM sitekb.crawl_stats WHERE run_id = 'robots-5xx'").fetchone()[0]
    assert stored["robots"]["unreachable"] == 1 and stored["excluded"]["robots-txt"] >= 1


def test_crawl_delay_is_obeyed(web, crawl):
    linked_site(web, f"User-agent: otherbot\nCrawl-delay: 30\n\nUser-agent: {AGENT}\nCrawl-delay: 0.4\n".encode(),
                paths=("/p1.html", "/p2.html", "/p3.html"))
    result = crawl(site_config(web.base_url, concurrency_per_host=4), "delay")
    assert result.stats["robots"] == {"crawl_delay": 0.4}
    with web.lock:
        after_robots = [h for h in web.hits if h.path.endswith(".html")]
    assert len(after_robots) == 3
    # Lower bounds only (never flaky): each request waited for the one before it.
    gaps = [b.at - a.at for a, b in zip(after_robots, after_robots[1:])]
    assert all(gap >= 0.35 for gap in gaps), gaps


def test_private_addresses_are_refused_unless_allowed(web, crawl):
    linked_site(web, RULES)
    # The message says how to allow it, for a site file and for an ad-hoc `--start-url` run.
    with pytest.raises(CrawlFailed, match=r"resolves to a private address .*--allow-private.*"
                                          r"crawl\.allow_private_addresses: true"):
        crawl(site_config(web.base_url, allow_private_addresses=False), "private")
    assert web.paths() == []   # the reachability check applies the same rule: nothing was sent


def test_opt_in_mode_keeps_only_labelled_pages(web, crawl):
    web.reset()
    web.add("/", html_reply(page("Home #train_on_this", links=["/in.html", "/out.html", "/both.html"])))
    web.add("/in.html", html_reply(page("In", "<p>Approved for the bot: #train_on_this</p>")))
    web.add("/out.html", html_reply(page("Out")))
    web.add("/both.html", html_reply(page("Both", "<p>#train_on_this but #do_NOT_train_on_this</p>")))
    result = crawl(site_config(web.base_url, opt_out={"opt_in_only": True}), "optin")
    kept = {url for url, row in result.pages.items() if row["body"]}
    assert kept == {"/", "/in.html"}
    assert result.exclusions == {"/out.html": {"opt-in-missing"}, "/both.html": {"label"}}
    assert "/out.html" in web.paths()   # fetched to read its labels, then nothing kept


def test_page_budget_stops_the_crawl(web, crawl):
    web.reset()
    links = [f"/n/{i}.html" for i in range(20)]
    web.add("/", html_reply(page("Home", links=links)))
    web.add_prefix("/n/", lambda r: html_reply(page(r.path))(r))
    result = crawl(site_config(web.base_url, max_pages=5), "budget")
    requested = [p for p in web.paths() if p.startswith("/n/")]
    # home + 4 = 5 pages, the first four links (breadth first); concurrent fetches arrive in any order
    assert sorted(requested) == sorted(links[:4])
    assert result.stats["skipped"] == {"max-pages": 16}
    assert {url for url, rules in result.exclusions.items() if "max-pages" in rules} == set(links[4:])


def test_an_endless_calendar_stops_at_the_query_variant_cap(web, crawl):
    web.reset()
    web.add("/", html_reply(page("Home", links=["/events?month=0"])))
    web.add_prefix("/events", lambda r: html_reply(page(
        r.path, links=[f"/events?month={int(r.query.split('=')[1]) + 1}"]))(r))
    result = crawl(site_config(web.base_url, max_depth=1000, max_query_variants=10), "calendar")
    assert [p for p in web.paths() if p.startswith("/events")] == [f"/events?month={n}" for n in range(10)]
    assert result.exclusions["/events?month=10"] == {"query-variants"}
    assert result.stats["finish_reason"] == "finished"


def test_crawl_stats_command_prints_the_runs(web, crawl, capsys):
    from sitekb.cli import main

    linked_site(web, RULES)
    crawl(site_config(web.base_url), "stats-1")
    crawl(site_config(web.base_url), "stats-2")
    capsys.readouterr()
    assert main(["crawl-stats", "--site", "fixture", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == ["stats-2", "stats-1"]
    assert rows[1]["full_crawl"] is True and rows[0]["full_crawl"] is False
    assert rows[0]["not_modified"] == 3 and rows[0]["excluded"] == {"robots-txt": 1}
    assert main(["crawl-stats", "--site", "fixture"]) == 0
    text = capsys.readouterr().out
    assert "stats-2" in text and "robots-txt=1" in text and "not modified" in text


def test_exclusions_command_filters_by_run_and_rule(web, crawl, capsys):
    from sitekb.cli import main

    linked_site(web, RULES)
    crawl(site_config(web.base_url), "excl-1")
    web.add("/", html_reply(page("Home", links=["/public.html", "/private/x.html", "/draft.html"])))
    web.add("/draft.html", html_reply(page("Draft", body="Internal draft. #do_NOT_train_on_this")))
    crawl(site_config(web.base_url), "excl-2", full=True)
    capsys.readouterr()
    assert main(["exclusions", "--site", "fixture", "--json"]) == 0
    [ledger] = json.loads(capsys.readouterr().out)
    # Nothing is published: the ledger of the site's newest crawl, one row per URL, in words.
    assert ledger["run_id"] == "excl-2" and ledger["target"].startswith("newest run")
    rows = {r["url"].removeprefix(web.base_url): r for r in ledger["entries"]}
    assert {url: (r["kind"], r["rule"]) for url, r in rows.items()} == {
        "/private/x.html": ("opt-out", "robots-txt"), "/draft.html": ("opt-out", "label")}
    assert rows["/draft.html"]["reason"] == "marked #do_NOT_train_on_this"
    assert rows["/private/x.html"]["reason"] == "disallowed by robots.txt"
    assert {r["run_id"] for r in ledger["entries"]} == {"excl-2"}
    assert main(["exclusions", "--run", "excl-1", "--json"]) == 0
    assert [r["rule"] for r in json.loads(capsys.readouterr().out)[0]["entries"]] == ["robots-txt"]
    assert main(["exclusions", "--site", "fixture", "--rule", "label"]) == 0
    text = capsys.readouterr().out
    assert "/draft.html" in text and "marked #do_NOT_train_on_this" in text and "private" not in text
    assert "1 opt-out" in text


def test_robots_txt_not_obeyed_still_gives_sitemaps_and_a_broken_tdmrep_is_counted(web, crawl):
    from tests.crawl.fixture_site import sitemap

    linked_site(web, RULES + f"Sitemap: {web.base_url}/sitemap.xml\n".encode())
    web.add("/sitemap.xml", sitemap(web.base_url, [("/only-in-sitemap.html", None)]))
    web.add("/only-in-sitemap.html", html_reply(page("Sitemap only")))
    web.add("/.well-known/tdmrep.json", raw(b"{not json", "application/json"))
    result = crawl(site_config(web.base_url, obey_robots_txt=False), "no-robots")
    fetched = {url for url, row in result.pages.items() if row["body"]}
    assert {"/private/x.html", "/only-in-sitemap.html"} <= fetched
    assert result.stats["bad_input"] == {"tdmrep_broken": 1}


def test_the_crawler_gets_its_job_in_a_private_file_not_on_its_command_line(web, crawl, database_url, monkeypatch):
    """The database URL (with its password) never shows in a process list; the job file is the user's own."""
    import os
    import stat
    import subprocess as real_subprocess

    from sitekb.stages import crawl as crawl_stage

    seen = []
    real_run = real_subprocess.run

    def spy(command, **kwargs):
        job = command[command.index("--job") + 1]
        seen.append((list(command), stat.S_IMODE(os.stat(job).st_mode), json.loads(open(job).read())))
        return real_run(command, **kwargs)

    monkeypatch.setattr(crawl_stage.subprocess, "run", spy)
    linked_site(web, RULES)
    result = crawl(site_config(web.base_url), "job-1")
    assert result.stats["fetched"] == 3
    (command, mode, job), = seen
    assert database_url not in " ".join(command) and mode == 0o600
    assert job["database_url"] == database_url and job["run_id"] == "job-1" and job["site"]["name"] == "fixture"
