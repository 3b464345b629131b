"""Coverage of a snapshot against the real database: computed from its table, stored with it, read by the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sitekb import coverage
from sitekb.cli import main
from sitekb.store import coverage as coverage_store
from sitekb.store import snapshots
from tests.db.factory import Page, make_snapshot

DIMS = 8


def topic_pages() -> tuple[list[Page], dict[str, np.ndarray]]:
    """Six blog posts about pricing, two docs pages about email: two sections, two clear topics, two languages."""
    rng = np.random.default_rng(3)
    pricing, email = np.eye(DIMS)[0], np.eye(DIMS)[1]
    pages, vectors = [], {}
    for i in range(6):
        texts = [f"Pricing plans and seats, part {i}.{c}: annual plans add seats for teams" for c in range(3)]
        pages.append(Page(f"https://cov.example/blog/pricing-{i}.html", f"Pricing plans {i}", texts,
                          headings=["Pricing", "Seats"], tags=["pricing"]))
        vectors.update({t: pricing + rng.normal(0, 0.05, DIMS) for t in texts})
    for i in range(2):
        texts = [f"Email deliverability {i}.{c}: keep the spam complaint rate low with DKIM" for c in range(3)]
        pages.append(Page(f"https://cov.example/docs/email-{i}.html", f"Email deliverability {i}", texts,
                          headings=["Email"], tags=["email", "ops"], language="de" if i else "en"))
        vectors.update({t: email + rng.normal(0, 0.05, DIMS) for t in texts})
    return pages, {t: (v / np.linalg.norm(v)).astype(np.float32) for t, v in vectors.items()}


@pytest.fixture
def snap(conn):
    pages, vectors = topic_pages()
    return make_snapshot(conn, "cov", pages, dims=DIMS, vectors=vectors, publish_as="production")


def test_coverage_counts_sections_tags_languages_and_names_the_topics(conn, snap):
    record = coverage.refresh(conn, snap, max_section_share=0.6)
    assert (record["chunks"], record["pages"]) == (24, 8)
    assert [(s["name"], s["chunks"], s["pages"], s["share"]) for s in record["sections"]] == \
        [("/blog/", 18, 6, 0.75), ("/docs/", 6, 2, 0.25)]
    assert {t["name"]: t["chunks"] for t in record["tags"]} == {"pricing": 18, "email": 6, "ops": 6}
    assert {r["name"]: r["chunks"] for r in record["languages"]} == {"en": 21, "de": 3}
    # k = round(sqrt(24 / 2)) = 3 clusters of two true topics: the biggest topic's chunks stay together.
    assert record["method"]["k"] == 3 and record["method"]["fitted_on"] == 24
    assert sum(c["chunks"] for c in record["clusters"]) == 24
    assert len({c["label"] for c in record["clusters"]}) == 3   # two clusters of one topic are told apart
    email = [c for c in record["clusters"] if "deliverability" in c["terms"]]
    assert len(email) == 1 and email[0]["chunks"] == 6 and email[0]["titles"][0].startswith("Email deliverability")
    assert all("pricing" in c["terms"] or "plans" in c["terms"] or "seats" in c["terms"]
               for c in record["clusters"] if c is not email[0])
    (warning,) = record["warnings"]
    assert warning.startswith("section /blog/ holds 75% of the chunks (18 of 24, 6 pages), above the 60% limit")
    assert coverage_store.get(conn, snap.snapshot_id) == json.loads(json.dumps(record))


def test_a_large_snapshot_is_fitted_on_a_sample_and_counted_in_sql(conn, snap, monkeypatch):
    everything = coverage.compute(conn, snap)
    monkeypatch.setattr(coverage, "FIT_SAMPLE", 10)
    sampled = coverage.compute(conn, snap)
    assert sampled["method"]["fitted_on"] == 10
    assert sum(c["chunks"] for c in sampled["clusters"]) == 24   # every chunk counted to its nearest centroid
    assert coverage.compute(conn, snap)["clusters"] == sampled["clusters"]   # the same sample, the same clusters
    assert everything["sections"] == sampled["sections"]
    # The SQL count is the nearest centroid by cosine, as numpy would assign every vector.
    pages, vectors = topic_pages()
    matrix = np.stack(list(vectors.values()))
    centroids, _ = coverage.kmeans(matrix[::5], 3)
    nearest = np.argmax(matrix @ centroids.T, axis=1)
    assert coverage_store.cluster_sizes(conn, snap.table_name, centroids) == \
        [int((nearest == i).sum()) for i in range(len(centroids))]


def test_the_limit_decides_the_warning_and_a_snapshot_without_a_record_gets_one(conn, snap):
    assert coverage_store.get(conn, snap.snapshot_id) is None
    record = coverage.of_snapshot(conn, snap, 0.8)
    assert record["warnings"] == [] and coverage_store.get(conn, snap.snapshot_id)["max_section_share"] == 0.8
    assert len(coverage.of_snapshot(conn, snap, 0.5)["warnings"]) == 1
    # The record goes with its snapshot record (history trimming deletes those).
    conn.execute("DELETE FROM sitekb.aliases WHERE snapshot_id = %s", (snap.snapshot_id,))
    conn.execute("DELETE FROM sitekb.alias_events WHERE to_snapshot = %s", (snap.snapshot_id,))
    conn.execute("DELETE FROM sitekb.snapshots WHERE snapshot_id = %s", (snap.snapshot_id,))
    assert coverage_store.get(conn, snap.snapshot_id) is None


def test_a_snapshot_whose_table_retention_dropped_has_no_coverage_to_compute(conn, snap):
    gone = snapshots.Snapshot(**{**snap.__dict__, "table_name": None, "state": "retired"})
    with pytest.raises(Exception) as error:
        coverage.compute(conn, gone)
    assert error.value.exit_code == 7 and "retention dropped its chunks" in str(error.value)


def test_the_cli_prints_the_coverage_and_answers_in_json(conn, snap, database_url, capsys):
    assert main(["coverage", "--site", "cov"]) == 0
    out = capsys.readouterr().out
    assert "cov: snapshot" in out and "/blog/" in out and "Topics:" in out
    assert main(["coverage", "--snapshot", str(snap.snapshot_id), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["snapshot_id"] == snap.snapshot_id and record["sections"][0]["name"] == "/blog/"
    assert record["max_section_share"] == 0.6   # no site file named cov: the default limit
    assert main(["coverage", "--site", "nosuch"]) == 7
    assert "no snapshot published" in capsys.readouterr().err
    assert main(["coverage", "--snapshot", "999999"]) == 7
    assert main(["coverage", "--snapshot", str(snap.snapshot_id), "--site", "other"]) == 7
    assert main(["coverage", "--snapshot", "1", "--alias", "x"]) == 2
