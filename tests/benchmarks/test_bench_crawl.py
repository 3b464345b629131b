"""Crawl benchmark: the sitekb spider against a bare Scrapy spider, and the cost of a re-crawl.

One local site of 400 generated articles (about 6 KB of HTML and 15 links
each, ETag and Last-Modified, a sitemap with lastmod) is served on 127.0.0.1
for the whole benchmark. Measured side by side in one run, politeness delays
off and the same concurrency:

- pages/s of the bare spider (fetch only, URL list given) and of the sitekb
  spider (discovery, robots.txt, TDMRep, opt-out checks, nosnippet, writes
  to Postgres), from spider open to close (process start-up excluded for
  both), best of three alternating rounds each; target >= 80 %;
- bytes and seconds of an unchanged re-crawl against the first crawl, once
  with sitemap lastmod (no request per page at all) and once with conditional
  GET only (a 304 per page); target <= 10 % of the bytes.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sitekb import store
from sitekb.stages.crawl import crawl_site
from tests.benchmarks.results import write_result
from tests.conftest import REPO, _reset_schema
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import WORDS, FixtureSite, html_reply, raw, sitemap

PAGES = 400
CONCURRENCY = 8
ROUNDS = 3


def build_site(web: FixtureSite) -> list[str]:
    rng = random.Random(7)
    paths = [f"/articles/{n:04d}.html" for n in range(PAGES)]
    for n, path in enumerate(paths):
        links = "".join(f'<li><a href="{p}">Article {p[-9:-5]}</a></li>' for p in rng.sample(paths, 15))
        text = "".join(f"<p>{WORDS}</p>" for _ in range(18))
        body = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Article {n}</title>"
                f"<meta name='description' content='Article {n} of the benchmark site'></head><body>"
                f"<nav><a href='/'>Home</a></nav><main><article><h1>Article {n}</h1>{text}</article></main>"
                f"<aside><ul>{links}</ul></aside></body></html>")
        web.add(path, html_reply(body))
    web.add("/", html_reply("<html><body>" + "".join(f'<a href="{p}">{p}</a>' for p in paths[:20])
                            + "</body></html>"))
    web.add("/robots.txt", raw(f"User-agent: *\nSitemap: {web.base_url}/sitemap.xml\n".encode(), "text/plain"))
    web.add("/sitemap.xml", sitemap(web.base_url, [(p, "2024-01-01") for p in ["/", *paths]]))
    return ["/", *paths]


def bare_crawl(urls: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url_file, out = Path(tmp) / "urls.txt", Path(tmp) / "stats.json"
        url_file.write_text("\n".join(urls))
        subprocess.run([sys.executable, "-m", "tests.benchmarks.bare_spider", str(url_file), str(out),
                        str(CONCURRENCY)], check=True, cwd=REPO, capture_output=True, timeout=600)
        return json.loads(out.read_text())


def rate(pages: int, seconds: float) -> float:
    return round(pages / seconds, 1) if seconds else 0.0


def test_bench_crawl(database_server):
    _reset_schema(database_server)
    with store.connection(database_server) as conn, FixtureSite() as web:
        store.migrate(conn)
        paths = build_site(web)
        urls = [web.base_url + p for p in paths]
        config = site_config(web.base_url, max_pages=2000, max_depth=10, concurrency_per_host=CONCURRENCY,
                             timeout_seconds=20, use_sitemap_lastmod=True)
        bare_runs, sitekb_runs = [], []
        for round_ in range(ROUNDS):
            bare_runs.append(bare_crawl(urls))
            stats = crawl_site(conn, config, f"bench-full-{round_}", database_server, full=True)
            assert stats["fetched"] == len(paths), stats
            sitekb_runs.append(stats)
        bare = max(bare_runs, key=lambda r: rate(r["pages"], r["crawl_seconds"]))
        full = max(sitekb_runs, key=lambda r: rate(r["fetched"], r["crawl_seconds"]))
        by_lastmod = crawl_site(conn, config, "bench-recrawl-lastmod", database_server)
        conditional_config = site_config(web.base_url, max_pages=2000, max_depth=10,
                                         concurrency_per_host=CONCURRENCY, use_sitemap_lastmod=False)
        by_304 = crawl_site(conn, conditional_config, "bench-recrawl-304", database_server)

    assert bare["pages"] == len(paths)
    assert by_lastmod["unchanged_by_sitemap"] == len(paths) and by_304["not_modified"] == len(paths)
    ratio = rate(full["fetched"], full["crawl_seconds"]) / rate(bare["pages"], bare["crawl_seconds"])
    median_ratio = (statistics.median(r["crawl_seconds"] for r in bare_runs)
                    / statistics.median(r["crawl_seconds"] for r in sitekb_runs))
    data = {
        "pages": len(paths), "concurrency": CONCURRENCY,
        "bare": {"runs": bare_runs, "pages_per_s": rate(bare["pages"], bare["crawl_seconds"])},
        "sitekb_full": {"runs": [{k: r[k] for k in ("fetched", "seconds", "crawl_seconds", "bytes", "requests")}
                                 for r in sitekb_runs],
                        "pages_per_s": rate(full["fetched"], full["crawl_seconds"])},
        "throughput_ratio": round(ratio, 3),
        "throughput_ratio_median": round(median_ratio, 3),
        "recrawl_lastmod": {k: by_lastmod[k] for k in ("crawl_seconds", "bytes", "requests", "not_modified")},
        "recrawl_304": {k: by_304[k] for k in ("crawl_seconds", "bytes", "requests", "not_modified")},
        "recrawl_bytes_ratio_lastmod": round(by_lastmod["bytes"] / full["bytes"], 4),
        "recrawl_bytes_ratio_304": round(by_304["bytes"] / full["bytes"], 4),
        "recrawl_time_ratio_lastmod": round(by_lastmod["crawl_seconds"] / full["crawl_seconds"], 3),
        "recrawl_time_ratio_304": round(by_304["crawl_seconds"] / full["crawl_seconds"], 3),
    }
    write_result("crawl", data, [
        f"{len(paths)} local pages, concurrency {CONCURRENCY}, no politeness delay",
        f"bare Scrapy spider (fetch only): {data['bare']['pages_per_s']} pages/s; sitekb spider: "
        f"{data['sitekb_full']['pages_per_s']} pages/s = {ratio:.0%} of bare (best of {ROUNDS}; median "
        f"{median_ratio:.0%}; target >= 80%)",
        f"first crawl {full['bytes'] / 1024:.0f} KiB in {full['crawl_seconds']:.2f} s; unchanged re-crawl by "
        f"sitemap lastmod {by_lastmod['bytes'] / 1024:.0f} KiB ({data['recrawl_bytes_ratio_lastmod']:.1%}) in "
        f"{by_lastmod['crawl_seconds']:.2f} s; by 304s {by_304['bytes'] / 1024:.0f} KiB "
        f"({data['recrawl_bytes_ratio_304']:.1%}) in {by_304['crawl_seconds']:.2f} s (target <= 10% of the bytes)",
    ])
    assert data["recrawl_bytes_ratio_304"] <= 0.10
