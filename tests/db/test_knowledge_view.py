"""The Knowledge view's FastAPI app (the sitekb Airflow plugin's), through TestClient on the real database.

Authorization is Airflow's simple auth manager itself (its role rules: a
viewer may read DAGs, not trigger them); only *who* is asking is set by the
test, since resolving a token needs Airflow's metadata database (the live
Airflow test in ``tests/airflow_live`` logs in for real).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("airflow.api_fastapi.auth.managers.simple.simple_auth_manager")

from fastapi.testclient import TestClient  # noqa: E402

from sitekb.orchestration.knowledge import app as knowledge_app  # noqa: E402
from sitekb.passages import DEFAULT_ALIAS  # noqa: E402
from sitekb.settings import Settings  # noqa: E402
from sitekb.store import snapshot_tables, snapshots  # noqa: E402
from tests.airflow_live import knowledge_seed  # noqa: E402
from tests.airflow_live.knowledge_seed import (  # noqa: E402
    APPROVED_URL, BASE, EXCLUDED, GOLDEN, HOSTILE_TITLE, QUARANTINED_URL, SITE, seed_site)


class Users:
    """Who the app thinks is asking; ``as_`` switches it."""

    def __init__(self):
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        self.known = {name: SimpleAuthManagerUser(username=name, role=name) for name in ("admin", "viewer")}
        self.current = self.known["admin"]

    def as_(self, name: str) -> None:
        self.current = self.known[name]


@pytest.fixture
def seeded(conn):
    return seed_site(conn)


@pytest.fixture
def users():
    return Users()


@pytest.fixture
def client(database_url, users):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    app = knowledge_app.create_app(database_url=database_url, auth_manager=SimpleAuthManager())
    app.dependency_overrides[knowledge_app.current_user] = lambda: users.current
    with TestClient(app) as test_client:
        yield test_client


def test_the_page_and_its_assets_are_local_and_never_parse_data_as_html(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>sitekb knowledge</title>" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'self'" in policy
    assets = {name: client.get(f"/static/{name}") for name in knowledge_app.STATIC_FILES}
    assert all(r.status_code == 200 for r in assets.values())
    assert assets["knowledge.js"].headers["content-type"].startswith("text/javascript")
    for text in [page.text, *(r.text for r in assets.values())]:
        # No CDN, no remote font: the view works offline. (The SVG namespace is a name, not a fetch.)
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text)
        assert "@import" not in text and "url(" not in text
    script = assets["knowledge.js"].text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/app.py").status_code == 404


def test_the_page_ships_with_a_regular_install():
    """The Docker image installs sitekb without -e: the page's files must be package data."""
    repo = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["sitekb"]
    package = repo / "plugins" / "sitekb"
    for name in ("index.html", *knowledge_app.STATIC_FILES):
        path = (package / "orchestration" / "knowledge" / "static" / name).relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), f"{path} is not package data"


def test_sites_list_aliases_and_what_they_point_to(client, seeded):
    sites = client.get("/api/sites").json()
    assert sites == [{
        "site": SITE, "dag_id": f"sitekb_{SITE}", "snapshots": 3, "newest_snapshot": seeded.rejected.snapshot_id,
        "aliases": {DEFAULT_ALIAS: seeded.second.snapshot_id}, "last_run_id": None, "last_run_status": None,
        "last_run_started_at": None, "last_run_finished_at": None}]
    assert client.get("/api/me").json() == {"name": "admin", "default_alias": DEFAULT_ALIAS}


def test_site_detail_has_history_quality_golden_and_the_moves(client, seeded, users):
    first, second, rejected = (s.snapshot_id for s in (seeded.first, seeded.second, seeded.rejected))
    detail = client.get(f"/api/sites/{SITE}").json()
    assert detail["can_rollback"] is True and detail["dag_id"] == f"sitekb_{SITE}"
    assert detail["live_snapshot"] == second
    [alias] = detail["aliases"]
    assert (alias["alias"], alias["snapshot_id"], alias["state"]) == (DEFAULT_ALIAS, second, "published")
    assert (alias["from_snapshot"], alias["actor"]) == (first, "airflow")
    assert alias["golden"]["hits"] == 4
    assert [s["snapshot_id"] for s in detail["snapshots"]] == [rejected, second, first]
    newest, live, oldest = detail["snapshots"]
    assert [s["state"] for s in detail["snapshots"]] == ["rejected", "published", "retired"]
    assert (newest["aliases"], live["aliases"], oldest["aliases"]) == ([], [DEFAULT_ALIAS], [])
    assert live["quality"]["golden"] == {"asked": 4, "hits": 4, "missed": [], "k": 5}
    assert live["quality"]["documents"]["quarantined"] == 1
    assert oldest["quality"]["golden"]["missed"] == [GOLDEN[3]]
    assert newest["quality"]["failures"][0]["check"] == "golden_questions"
    assert newest["reasons"] == newest["quality"]["failures"]
    assert live["diff"] == {"against": first, "added": 3, "removed": 1, "changed": 1,
                            "chunks_added": 5, "chunks_removed": 2}
    assert oldest["diff"]["against"] is None and oldest["diff"]["added"] == 3
    assert (live["counts"]["chunks"], live["counts"]["documents"], live["has_table"]) == (8, 5, True)
    assert [(m["from_snapshot"], m["to_snapshot"], m["actor"]) for m in detail["moves"]] == [
        (first, second, "airflow"), (None, first, "airflow")]
    # A viewer reads it all but may not roll back.
    users.as_("viewer")
    viewer = client.get(f"/api/sites/{SITE}").json()
    assert viewer["can_rollback"] is False and viewer["snapshots"] == detail["snapshots"]


def test_quarantine_and_exclusions_of_the_live_snapshot(client, seeded):
    held = client.get(f"/api/sites/{SITE}/snapshots/{seeded.second.snapshot_id}/held-back").json()
    assert held["run_id"] == seeded.second.run_id
    quarantine = held["quarantine"]
    assert (quarantine["quarantined"], quarantine["approved"], quarantine["total"]) == (1, 1, 2)
    first, second = quarantine["documents"]
    assert (first["url"], first["status"], first["failures"][0]["check"]) == (QUARANTINED_URL, "quarantined",
                                                                              "min_words")
    assert (second["url"], second["status"], second["approved_by"]) == (APPROVED_URL, "accepted", "content-owner")
    assert second["approval_reason"] == "the transcript is reviewed"
    exclusions = held["exclusions"]
    assert exclusions["total"] == 3 and exclusions["by_rule"] == {"label": 1, "pattern": 1, "robots-meta": 1}
    assert sorted((e["url"], e["rule"], e["detail"]) for e in exclusions["exclusions"]) == sorted(EXCLUDED)
    # The first snapshot's run held nothing back.
    empty = client.get(f"/api/sites/{SITE}/snapshots/{seeded.first.snapshot_id}/held-back").json()
    assert empty["quarantine"]["total"] == 0 and empty["exclusions"]["total"] == 0


def test_the_diff_is_the_store_diff(client, seeded, conn):
    answer = client.get(f"/api/sites/{SITE}/diff", params={"from": seeded.first.snapshot_id,
                                                           "to": seeded.second.snapshot_id})
    assert answer.status_code == 200
    expected = snapshot_tables.diff(conn, seeded.first, seeded.second).as_dict()
    got = answer.json()
    assert {k: got[k] for k in expected} == expected
    assert (got["added_total"], got["removed_total"], got["changed_total"]) == (3, 1, 1)
    assert [p["url"] for p in got["changed"]] == [f"{BASE}/email.html"]
    assert HOSTILE_TITLE in [p["title"] for p in got["added"]]


def test_rollback_moves_the_alias_and_names_the_airflow_user(client, seeded, conn):
    answer = client.post(f"/api/sites/{SITE}/aliases/{DEFAULT_ALIAS}/rollback", json={"reason": "bad prices"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"site": SITE, "alias": DEFAULT_ALIAS, "from_snapshot": seeded.second.snapshot_id,
                             "to_snapshot": seeded.first.snapshot_id, "actor": "admin",
                             "reason": "rollback in the Airflow Knowledge view: bad prices"}
    assert snapshots.resolve(conn, SITE).snapshot_id == seeded.first.snapshot_id
    newest = snapshots.history(conn, SITE)[0]
    assert (newest["actor"], newest["from_snapshot"], newest["to_snapshot"]) == (
        "admin", seeded.second.snapshot_id, seeded.first.snapshot_id)
    assert client.get("/api/sites").json()[0]["aliases"] == {DEFAULT_ALIAS: seeded.first.snapshot_id}


def test_a_viewer_may_not_roll_back(client, seeded, conn, users):
    users.as_("viewer")
    answer = client.post(f"/api/sites/{SITE}/aliases/{DEFAULT_ALIAS}/rollback", json={})
    assert answer.status_code == 403
    assert f"viewer may not trigger the DAG sitekb_{SITE}" in answer.json()["detail"]
    assert snapshots.resolve(conn, SITE).snapshot_id == seeded.second.snapshot_id
    assert len(snapshots.history(conn, SITE)) == 2


def test_a_rollback_is_a_json_call_not_a_form_post(client, seeded, conn):
    # Another origin can send a form or text/plain without a CORS preflight, not JSON: the session
    # cookie alone never moves an alias.
    url = f"/api/sites/{SITE}/aliases/{DEFAULT_ALIAS}/rollback"
    assert client.post(url, data={"reason": "x"}).status_code == 415
    assert client.post(url, content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post(url, content=b"{}", headers={"Content-Type": ""}).status_code == 415
    assert snapshots.resolve(conn, SITE).snapshot_id == seeded.second.snapshot_id


def test_unknown_things_and_impossible_rollbacks_say_so(client, seeded, conn):
    assert client.get("/api/sites/nosuch").status_code == 404
    assert client.get("/api/sites/Not A Site").status_code == 422
    other = knowledge_seed.make_snapshot(conn, "other", knowledge_seed.V1[:1], publish_as=DEFAULT_ALIAS)
    wrong = client.get(f"/api/sites/{SITE}/snapshots/{other.snapshot_id}/held-back")
    assert wrong.status_code == 404 and "of site 'other'" in wrong.json()["detail"]
    assert client.get(f"/api/sites/{SITE}/diff", params={"from": other.snapshot_id,
                                                         "to": seeded.second.snapshot_id}).status_code == 404
    assert client.post(f"/api/sites/{SITE}/aliases/staging/rollback", json={}).status_code == 404
    # The other site's alias has never moved: nothing to go back to.
    refused = client.post(f"/api/sites/other/aliases/{DEFAULT_ALIAS}/rollback", json={})
    assert refused.status_code == 409 and "no earlier snapshot" in refused.json()["detail"]


def test_without_a_token_airflow_says_not_authenticated(database_url):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    with TestClient(knowledge_app.create_app(database_url=database_url, auth_manager=SimpleAuthManager())) as c:
        answer = c.get("/api/sites")
        assert answer.status_code == 401 and answer.json()["detail"] == "Not authenticated"
        assert c.get("/").status_code == 200   # the page itself holds no data


def test_no_database_is_a_503_that_says_where_to_configure_it(users, tmp_path):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    app = knowledge_app.create_app(settings=lambda: Settings(database_url=None, home=tmp_path),
                                   auth_manager=SimpleAuthManager())
    app.dependency_overrides[knowledge_app.current_user] = lambda: users.current
    with TestClient(app) as c:
        answer = c.get("/api/sites")
    assert answer.status_code == 503 and "SITEKB_DATABASE_URL" in answer.json()["detail"]
