"""A site for the Knowledge view's tests, written straight into the sitekb database (no crawl, no DAG).

Three snapshots of one site, built with the production code (:func:`tests.db.factory.make_snapshot`)
and given what the evaluate and publish stages record:

1. ``first``: published, then replaced (retired);
2. ``second``: live, what the default alias points to (so the alias has moved once and can be
   rolled back), with one quarantined and one approved document and three exclusions of its crawl;
3. ``rejected``: refused by the gate (it lost a golden question), never published.

The second snapshot adds a page whose title is hostile HTML: the view must show it as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sitekb.passages import DEFAULT_ALIAS
from sitekb.store import approvals, ledger, snapshot_tables, snapshots
from tests.db.factory import Page, make_snapshot

SITE = "handbook"
BASE = "https://handbook.example.com"
HOSTILE_TITLE = '<img src=x onerror="window.__xss=1">Pricing & <b>plans</b>'
HOSTILE_URL = f"{BASE}/pricing.html"
QUARANTINED_URL = f"{BASE}/tags/martech.html"
APPROVED_URL = f"{BASE}/videos/webinar-transcript.html"
EXCLUDED = [(f"{BASE}/private/notes.html", "robots-meta", "noindex"),
            (f"{BASE}/internal/salaries.html", "label", "#do_NOT_train_on_this"),
            (f"{BASE}/cart", "pattern", "/cart")]
GOLDEN = ["How many points does a demo request add?", "What complaint rate does Gmail allow?",
          "When do we rehearse a webinar?", "How long should an A/B test run?"]

V1 = [
    Page(f"{BASE}/lead-scoring.html", "Lead scoring", [
        "A demo request adds 30 points to a lead score.", "Leads above 60 points go to sales."]),
    Page(f"{BASE}/email.html", "Email deliverability", [
        "Keep the spam complaint rate under 0.3 percent.", "Authenticate mail with SPF, DKIM and DMARC."]),
    Page(f"{BASE}/webinars.html", "Webinar runbook", ["Rehearse with speakers two days before."]),
]
V2 = [
    V1[0],
    Page(f"{BASE}/email.html", "Email deliverability", [
        "Keep the spam complaint rate under 0.1 percent.", "Authenticate mail with SPF, DKIM and DMARC."]),
    Page(HOSTILE_URL, HOSTILE_TITLE, ["Plans start at 49 euros a month.", "Annual billing saves two months."]),
    Page(APPROVED_URL, "Webinar: lead scoring in practice (transcript)", [
        "So um today we look at lead scoring in practice."]),
    Page(QUARANTINED_URL, "Martech", ["Tags."]),
]
V3 = V2[:2]


@dataclass
class Seeded:
    site: str
    first: snapshots.Snapshot      # published, then replaced
    second: snapshots.Snapshot     # live: what DEFAULT_ALIAS points to
    rejected: snapshots.Snapshot   # refused by the gate


def _golden(missed: list[str]) -> dict:
    return {"asked": len(GOLDEN), "hits": len(GOLDEN) - len(missed), "missed": missed, "k": 5}


def _documents(accepted: int, quarantined: int = 0, approved: int = 0, **failed: int) -> dict:
    return {"extracted": accepted + quarantined, "accepted": accepted, "quarantined": quarantined,
            "approved": approved, "failed_checks": failed}


def _publish(conn, snap: snapshots.Snapshot, site: str) -> None:
    snapshots.publish(conn, snap.snapshot_id, DEFAULT_ALIAS, actor="airflow",
                      reason=f"run sitekb_{site}__scheduled__{snap.snapshot_id}")


def seed_site(conn, site: str = SITE) -> Seeded:
    """The three snapshots of ``site``; see the module docstring."""
    first = make_snapshot(conn, site, V1, seed=1)
    snapshots.set_state(conn, first.snapshot_id, "validated", diff=snapshot_tables.diff(conn, None, first).summary(),
                        quality={"golden": _golden([GOLDEN[3]]), "documents": _documents(3), "failures": []})
    _publish(conn, first, site)

    second = make_snapshot(conn, site, V2, seed=2)
    snapshots.set_state(conn, second.snapshot_id, "validated",
                        diff=snapshot_tables.diff(conn, first, second).summary(),
                        quality={"golden": _golden([]), "failures": [],
                                 "documents": _documents(4, quarantined=1, approved=1, min_words=1)})
    _publish(conn, second, site)
    approval = approvals.record(conn, site=site, url=APPROVED_URL, content_hash="seeded",
                                reason="the transcript is reviewed", approved_by="content-owner",
                                run_id=second.run_id, failures=[])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("UPDATE sitekb.documents SET status = 'quarantined', failures = %s WHERE run_id = %s AND url = %s",
                    (json.dumps([{"check": "min_words", "value": 1, "threshold": 50,
                                  "message": "1 words, fewer than 50"}]), second.run_id, QUARANTINED_URL))
        cur.execute("UPDATE sitekb.documents SET approval_id = %s WHERE run_id = %s AND url = %s",
                    (approval["id"], second.run_id, APPROVED_URL))
        ledger.add_exclusions(cur, site, second.run_id, [ledger.Exclusion(*e) for e in EXCLUDED])

    rejected = make_snapshot(conn, site, V3, seed=3)
    lost = {"check": "golden_questions", "value": 2, "threshold": 4,
            "message": f"answers 2/4 golden questions, live answers 4; lost: {GOLDEN[2:]}"}
    snapshots.set_state(conn, rejected.snapshot_id, "rejected", reasons=[lost],
                        diff=snapshot_tables.diff(conn, second, rejected).summary(),
                        quality={"golden": _golden(GOLDEN[2:]), "documents": _documents(2), "failures": [lost]})
    return Seeded(site, *(snapshots.get(conn, s.snapshot_id) for s in (first, second, rejected)))
