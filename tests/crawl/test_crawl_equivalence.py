"""A crawl's page set does not depend on the order its requests finish in (issue #16).

The depth of a URL is its shortest distance from any start (a start URL or a
sitemap entry, both depth 0), so a full crawl, an incremental crawl of the
unchanged site (conditional GETs, sitemap ``lastmod`` answered without a
request) and a second full crawl keep exactly the same pages and record the
same ``max-depth`` exclusions. Real crawls of sites served on 127.0.0.1 into the
real database; hypothesis generates the link structures (pagination chains
longer than ``max_depth``, sitemap-only pages, pages reachable deep through links
and shallow through the sitemap, cycles). A pure property test drives the
:class:`~sitekb_crawlers.frontier.Frontier` the way the spider does, in random
orders, against a breadth-first search.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sitekb.sites import SiteConfig
from sitekb.stages.crawl import crawl_site
from sitekb_crawlers.frontier import CLOSER, SEEN, Frontier
from sitekb_crawlers.items import ExclusionItem, VoidedExclusion
from sitekb_crawlers.pipelines import PostgresPipeline
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import html_reply, page, raw, sitemap

OLD = "2024-01-01"   # every sitemap entry is unchanged: the incremental crawl skips its request
EXAMPLES = itertools.count()


@dataclass(frozen=True)
class Shape:
    """A site: the links of each page (by path), which pages the sitemap lists, the depth limit."""

    links: dict[str, list[str]]
    sitemap: list[str]
    max_depth: int


def serve(web, shape: Shape) -> None:
    web.reset()
    base = web.base_url
    web.add("/robots.txt", raw(f"User-agent: *\nSitemap: {base}/sitemap.xml\n".encode(), "text/plain"))
    web.add("/sitemap.xml", sitemap(base, [(path, OLD) for path in shape.sitemap]))
    for path, links in shape.links.items():
        # The home page has no validators (always 200); every other page answers 304 when unchanged.
        web.add(path, html_reply(page(f"Page {path}", links=links), validators=path != "/"))


def config_of(web, name: str, max_depth: int) -> SiteConfig:
    config = site_config(web.base_url, max_depth=max_depth, max_pages=10_000, use_sitemap_lastmod=True)
    return config.model_copy(update={"name": name})


@dataclass
class Outcome:
    pages: set[str]        # paths of the pages the run kept (fetched, or unchanged)
    too_deep: set[str]     # paths recorded as max-depth exclusions of the run
    stats: dict


def crawl_once(conn, database_url, web, config: SiteConfig, run_id: str, full: bool) -> Outcome:
    stats = crawl_site(conn, config, run_id, database_url, full=full)
    base = web.base_url
    pages = {url.removeprefix(base) for (url,) in conn.execute(
        """SELECT url FROM sitekb.pages WHERE site = %s AND last_run_id = %s AND status IN (200, 304)
             AND excluded_rule IS NULL AND body IS NOT NULL""", (config.name, run_id))}
    too_deep = {url.removeprefix(base) for (url,) in conn.execute(
        "SELECT url FROM sitekb.exclusions WHERE run_id = %s AND rule = 'max-depth'", (run_id,))}
    return Outcome(pages, too_deep, stats)


def distances(shape: Shape) -> dict[str, int]:
    """Shortest distance of every reachable path from "/" and the sitemap entries."""
    found = {path: 0 for path in ["/", *shape.sitemap]}
    queue = deque(found)
    while queue:
        path = queue.popleft()
        for link in shape.links.get(path, []):
            if link not in found:
                found[link] = found[path] + 1
                queue.append(link)
    return found


def expected(shape: Shape) -> tuple[set[str], set[str]]:
    """(pages kept, URLs refused as max-depth) of a crawl that takes every URL at its shortest depth."""
    found = distances(shape)
    return ({p for p, d in found.items() if d <= shape.max_depth},
            {p for p, d in found.items() if d == shape.max_depth + 1})


def crawl_three_times(conn, database_url, web, shape: Shape, name: str) -> list[Outcome]:
    serve(web, shape)
    config = config_of(web, name, shape.max_depth)
    first = crawl_once(conn, database_url, web, config, f"{name}-full", full=True)
    incremental = crawl_once(conn, database_url, web, config, f"{name}-incr", full=False)
    again = crawl_once(conn, database_url, web, config, f"{name}-full2", full=True)
    assert first.stats["full"] is True and incremental.stats["full"] is False and again.stats["full"] is True
    return [first, incremental, again]


# -- the reported shape ---------------------------------------------------------------------

def paginated_index(lists: int = 6, items: int = 4, fillers: int = 400) -> Shape:
    """An index of ``lists`` pages chained by "next" links, each listing ``items`` items; the sitemap
    lists the items (after ``fillers`` other pages) but not the index pages; max_depth 1."""
    links: dict[str, list[str]] = {"/": ["/list/1"]}
    item_paths = []
    for n in range(1, lists + 1):
        mine = [f"/item/{n}-{i}" for i in range(items)]
        item_paths += mine
        links[f"/list/{n}"] = mine + ([f"/list/{n + 1}"] if n < lists else [])
        links.update({path: ["/list/1"] for path in mine})
    filler_paths = [f"/filler/{n}" for n in range(fillers)]
    links.update({path: ["/"] for path in filler_paths})
    return Shape(links, filler_paths + item_paths, max_depth=1)


def test_items_of_a_deep_index_chain_listed_in_the_sitemap_are_kept_by_every_crawl(conn, database_url, web):
    shape = paginated_index()
    pages, too_deep = expected(shape)
    assert {f"/item/6-{i}" for i in range(4)} <= pages and too_deep == {"/list/2"}
    outcomes = crawl_three_times(conn, database_url, web, shape, "chain")
    for outcome in outcomes:
        assert outcome.pages == pages
        # A URL the links reached too deep but the sitemap at depth 0 leaves no max-depth row.
        assert outcome.too_deep == too_deep
    incremental = outcomes[1]
    assert incremental.stats["unchanged_by_sitemap"] == len(shape.sitemap)
    assert incremental.stats["skipped"].get("max-depth") == 1


# -- generated shapes -------------------------------------------------------------------------

@st.composite
def shapes(draw) -> Shape:
    """Sites of up to ~40 pages: a pagination chain longer than max_depth with items, random extra
    links (cycles included), pages only the sitemap lists, a sitemap listing some deep pages."""
    max_depth = draw(st.integers(min_value=0, max_value=3))
    chain = draw(st.integers(min_value=max_depth + 1, max_value=max_depth + 5))
    per_page = draw(st.integers(min_value=0, max_value=3))
    links: dict[str, list[str]] = {"/": ["/p/1"]}
    items = []
    for n in range(1, chain + 1):
        mine = [f"/i/{n}-{i}" for i in range(per_page)]
        items += mine
        links[f"/p/{n}"] = mine + ([f"/p/{n + 1}"] if n < chain else [])
        for path in mine:
            links[path] = []
    orphans = [f"/o/{n}" for n in range(draw(st.integers(min_value=0, max_value=4)))]
    for path in orphans:
        links[path] = []
    paths = sorted(links)
    extra = draw(st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(paths)), max_size=12))
    for source, target in extra:       # back links make cycles, forward links shortcuts
        if target not in links[source]:
            links[source].append(target)
    listed = draw(st.lists(st.sampled_from([p for p in paths if p != "/"]), unique=True, max_size=10))
    fillers = [f"/f/{n}" for n in range(draw(st.sampled_from([0, 40, 150])))]
    for path in fillers:
        links[path] = []
    # Fillers first: by the time start() yields the listed pages, the links may have reached them.
    return Shape(links, fillers + [p for p in listed if p not in orphans] + orphans, max_depth)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(shape=shapes())
def test_full_incremental_and_full_again_keep_the_same_pages(conn, database_url, web, shape):
    pages, too_deep = expected(shape)
    # A site (and runs) of its own per example: the database is the test's, shared by its examples.
    outcomes = crawl_three_times(conn, database_url, web, shape, f"gen{next(EXAMPLES)}")
    for outcome in outcomes:
        assert outcome.pages == pages
        assert outcome.too_deep == too_deep


# -- the frontier alone, in random orders ------------------------------------------------------

@st.composite
def graphs(draw) -> tuple[dict[str, list[str]], list[str], int]:
    size = draw(st.integers(min_value=1, max_value=25))
    nodes = [f"https://e.com/{n}" for n in range(size)]
    links = {node: draw(st.lists(st.sampled_from(nodes), max_size=4)) for node in nodes}
    starts = draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=5))
    return links, starts, draw(st.integers(min_value=0, max_value=5))


@settings(max_examples=400, deadline=None)
@given(graph=graphs(), seed=st.integers(min_value=0, max_value=2**32))
def test_the_frontier_takes_every_url_at_its_shortest_depth_whatever_the_order(graph, seed):
    links, starts, max_depth = graph
    frontier = Frontier(max_pages=10_000, max_depth=max_depth)
    order = random.Random(seed)
    # As the spider does: start URLs and sitemap entries arrive interleaved with responses,
    # responses arrive in any order, and a URL found closer follows its links again.
    arriving = [(url, 0) for url in starts]
    in_flight: list[str] = []
    reported: list[str] = []

    def schedule(pending: list[tuple[str, int]]) -> None:
        queue = deque(pending)
        while queue:
            url, depth = queue.popleft()
            outcome = frontier.admit(url, depth)
            if outcome is None:
                in_flight.append(url)
            elif outcome == CLOSER:
                queue.extend(frontier.follow_again(url))
            elif outcome != SEEN:
                reported.append(url)

    while arriving or in_flight:
        if arriving and (not in_flight or order.random() < 0.3):
            schedule([arriving.pop(0)])
            continue
        url = in_flight.pop(order.randrange(len(in_flight)))
        depth = frontier.expand(url, links[url])
        schedule([(link, depth) for link in links[url]])

    found = {url: 0 for url in starts}
    queue = deque(starts)
    while queue:
        url = queue.popleft()
        for link in links[url]:
            if link not in found:
                found[link] = found[url] + 1
                queue.append(link)
    assert frontier.scheduled == {url: d for url, d in found.items() if d <= max_depth}
    assert frontier.too_deep == {url for url, d in found.items() if d == max_depth + 1}
    assert len(reported) == len(set(reported))            # each refusal reported once
    assert set(reported) >= frontier.too_deep


# -- the pipeline: a provisional exclusion is written only if it still holds at the end ---------

def test_the_pipeline_holds_provisional_exclusions_until_the_crawl_ends(conn, database_url):
    pipeline = PostgresPipeline(database_url, "held", "held-1", batch_size=100, max_exclusions_per_rule=2)
    deep = [ExclusionItem(url=f"https://e.com/{n}", rule="max-depth", provisional=True) for n in range(3)]
    # Items of different responses run concurrently: a void may overtake its exclusion.
    for item in [deep[0], VoidedExclusion(url=deep[1].url, rule="max-depth"), deep[1], deep[2],
                 VoidedExclusion(url=deep[0].url, rule="max-depth")]:
        asyncio.run(pipeline.process_item(item))
    assert pipeline.buffer == []                                  # nothing written while the crawl runs
    assert list(pipeline.provisional) == [(deep[2].url, "max-depth")]
    pipeline.open_spider()
    try:
        pipeline._write(list(pipeline.provisional.values()))      # what close_spider writes last
    finally:
        pipeline.conn.close()
    rows = conn.execute("SELECT url FROM sitekb.exclusions WHERE run_id = 'held-1'").fetchall()
    assert rows == [(deep[2].url,)]
