"""Full-text vectors: computed once per content by the chunk stage, copied by the build."""

from __future__ import annotations

from sitekb.store import fulltext
from tests.db.factory import Page, make_snapshot

PAGES = [
    Page("https://ft.example/a.html", "Pricing plans", ["Annual billing saves twenty percent.", "Seats are counted monthly."],
         headings=["Billing", "Discounts"]),
    Page("https://ft.example/b.html", "Consent", ["Unsubscribed contacts never receive campaigns."],
         headings=["Email"]),
]


def _vectors(conn, snap) -> dict[str, str]:
    return {chunk_id: tsv for chunk_id, tsv in conn.execute(
        f"SELECT chunk_id, tsv::text FROM sitekb_snapshots.{snap.table_name}")}


def test_vectors_are_computed_once_and_reused_by_later_runs(conn):
    first = make_snapshot(conn, "ft", PAGES)
    assert conn.execute("SELECT count(*) FROM sitekb.fulltext_cache").fetchone()[0] == 3
    second = make_snapshot(conn, "ft", PAGES)
    again = fulltext.index_run(conn, second.run_id)
    assert (again["fulltext_computed"], again["fulltext_reused"]) == (0, 3)
    assert conn.execute("SELECT count(*) FROM sitekb.fulltext_cache").fetchone()[0] == 3
    assert _vectors(conn, first) == _vectors(conn, second)


def test_title_headings_and_text_are_weighted_and_a_new_title_is_a_new_vector(conn):
    snap = make_snapshot(conn, "ft", PAGES)
    tsv = conn.execute(f"SELECT tsv::text FROM sitekb_snapshots.{snap.table_name} WHERE url LIKE '%%a.html' "
                       "ORDER BY seq LIMIT 1").fetchone()[0]
    assert "'price':1A" in tsv and "'bill':3B,6C" in tsv and "'annual':5C" in tsv
    renamed = [Page(PAGES[0].url, "Plans and prices", PAGES[0].chunks, headings=PAGES[0].headings), PAGES[1]]
    snap2 = make_snapshot(conn, "ft", renamed)
    counts = fulltext.index_run(conn, snap2.run_id)
    assert counts["fulltext_reused"] == 3     # the factory's own index_run computed the two renamed ones
    assert conn.execute("SELECT count(*) FROM sitekb.fulltext_cache").fetchone()[0] == 5
    hits = conn.execute(f"SELECT count(*) FROM sitekb_snapshots.{snap2.table_name} "
                        "WHERE tsv @@ to_tsquery('english', 'plans & prices')").fetchone()[0]
    assert hits == 2


def test_a_run_staged_without_cached_vectors_builds_the_same_snapshot(conn):
    computed_by_build = make_snapshot(conn, "ft", PAGES, fulltext_stage=False)
    assert conn.execute("SELECT count(*) FROM sitekb.fulltext_cache").fetchone()[0] == 0
    from_cache = make_snapshot(conn, "ft", PAGES)
    assert _vectors(conn, computed_by_build) == _vectors(conn, from_cache)
