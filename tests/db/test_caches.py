"""Pruning the embedding and full-text caches: only entries no staged chunk uses, past a grace period."""

from __future__ import annotations

import json

from sitekb.store import embeddings, fulltext
from sitekb.cli import main
from tests.db.factory import Page, make_snapshot

OLD = [Page("https://c.example/old.html", "Old page", ["Retired pricing from last year.", "Legacy seat bundles."])]
NEW = [Page("https://c.example/new.html", "New page", ["Current pricing per seat."])]


def _sizes(conn) -> tuple[int, int]:
    return (conn.execute("SELECT count(*) FROM sitekb.embedding_cache").fetchone()[0],
            conn.execute("SELECT count(*) FROM sitekb.fulltext_cache").fetchone()[0])


def test_prune_drops_only_old_entries_no_staged_chunk_uses(conn, database_url, capsys):
    old = make_snapshot(conn, "c", OLD)
    make_snapshot(conn, "c", NEW)
    conn.execute("DELETE FROM sitekb.chunks WHERE run_id = %s", (old.run_id,))   # as publishing a later run does
    assert _sizes(conn) == (3, 3)

    assert embeddings.prune(conn, 30) == fulltext.prune(conn, 30) == 0  # all entries are younger than 30 days
    conn.execute("UPDATE sitekb.embedding_cache SET created_at = now() - interval '40 days'")
    conn.execute("UPDATE sitekb.fulltext_cache SET created_at = now() - interval '40 days'")
    assert main(["embeddings", "prune", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"embeddings": 2, "fulltext_vectors": 2, "older_than_days": 30,
                                                   "dry_run": True}
    assert _sizes(conn) == (3, 3)
    assert main(["embeddings", "prune"]) == 0
    assert "dropped 2 cached embeddings and 2 full-text vectors" in capsys.readouterr().out
    assert _sizes(conn) == (1, 1)                                          # the new page's chunk stays cached
    # The old snapshot keeps its own vectors: it is still searchable.
    assert conn.execute(f"SELECT count(*) FROM sitekb_snapshots.{old.table_name} "
                        "WHERE embedding IS NOT NULL AND tsv @@ to_tsquery('english', 'legacy')").fetchone()[0] == 1


def test_a_negative_grace_period_is_a_config_error(conn, database_url):
    assert main(["embeddings", "prune", "--older-than", "-1"]) == 2
