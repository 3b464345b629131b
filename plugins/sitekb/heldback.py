"""The ledgers a content owner reads: what is held back from a snapshot, one row per URL, with the reason in words.

``sitekb quarantine`` and ``sitekb exclusions`` read :func:`ledger`. By
default it describes the site's live snapshot (the ``production`` alias):
what the run that built it left out. ``--snapshot N`` or ``--run RUN_ID``
describe another one, a rejected run included; a dry run keeps no documents,
so it never hides the live ledger. Each URL appears once, under the newest
reason the run recorded for it:

- ``opt-out``: the owner's signal (``marked #do_NOT_train_on_this``, ``robots noai``, robots.txt, TDM reservation);
- ``excluded``: a config rule or a page sitekb does not read (a canonical copy, a binary file, a pattern);
- ``limit``: a crawl limit or trap guard stopped before the page;
- ``not-found`` and ``fetch-failed``: the site answered 404/410 (or another error), or did not answer;
- ``removed``: in the previous snapshot, and nothing in this run names it any more;
- ``quarantined`` and ``approved``: the quality gate held it back, or an approval let it through.

Noise (sitemaps and feeds linked as pages, robots.txt, images) stays out
unless ``include_noise``. :func:`removal_reasons` gives the same words for the
pages a snapshot diff shows as removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from sitekb import reasons
from sitekb.errors import ConfigError, NotFound
from sitekb.passages import DEFAULT_ALIAS
from sitekb.store import heldback as store

QUARANTINE_KINDS = ("quarantined", "approved")
KINDS = ("opt-out", "excluded", "limit", "not-found", "fetch-failed", "removed", *QUARANTINE_KINDS)


@dataclass
class Entry:
    """One URL held back, and why."""

    url: str
    kind: str
    reason: str
    rule: str | None = None
    detail: str | None = None
    at: datetime | None = None
    title: str | None = None
    failures: list = field(default_factory=list)
    content_hash: str | None = None
    approval: dict | None = None


@dataclass
class Ledger:
    """What one run of a site held back from its snapshot."""

    site: str
    run_id: str | None
    snapshot_id: int | None
    target: str                     # how it was chosen: "alias production", "snapshot 3", "run X", "newest run"
    entries: list[Entry] = field(default_factory=list)
    unrecorded: int = 0             # exclusions past the per-rule cap, counted but not listed
    newer: list[dict] = field(default_factory=list)   # later runs not live (rejected, failed), for a hint

    def of_kinds(self, kinds: Iterable[str]) -> "Ledger":
        keep = set(kinds)
        return Ledger(self.site, self.run_id, self.snapshot_id, self.target,
                      [e for e in self.entries if e.kind in keep], self.unrecorded, self.newer)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.kind] = out.get(entry.kind, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "run_id": self.run_id, "snapshot_id": self.snapshot_id, "target": self.target,
                "counts": self.counts(), "unrecorded_exclusions": self.unrecorded,
                "newer_runs": self.newer,
                "entries": [{**asdict(e), "site": self.site, "run_id": self.run_id} for e in self.entries]}


def ledgers(conn: psycopg.Connection, *, site: str | None = None, snapshot_id: int | None = None,
            run_id: str | None = None, alias: str = DEFAULT_ALIAS, include_noise: bool = False) -> list[Ledger]:
    """The ledger of ``site`` (or of every site), for its live snapshot or the named snapshot or run."""
    if snapshot_id is not None and run_id is not None:
        raise ConfigError("--snapshot and --run both name what to describe: pass one of them")
    if snapshot_id is not None or run_id is not None:
        return [ledger(conn, site=site, snapshot_id=snapshot_id, run_id=run_id, include_noise=include_noise)]
    names = [site] if site else store.sites(conn)
    return [ledger(conn, site=name, alias=alias, include_noise=include_noise) for name in names]


def ledger(conn: psycopg.Connection, *, site: str | None = None, snapshot_id: int | None = None,
           run_id: str | None = None, alias: str = DEFAULT_ALIAS, include_noise: bool = False) -> Ledger:
    """What one run held back; the run is the named one, the named snapshot's, or the live snapshot's."""
    site, run_id, snapshot_id, target, diff = _target(conn, site, snapshot_id, run_id, alias)
    result = Ledger(site, run_id, snapshot_id, target)
    if run_id is None:
        return result
    seen: dict[str, Entry] = {}

    def add(entry: Entry) -> None:
        # One row per URL: a document verdict outranks a crawl record of the same URL (a redirect
        # target recorded as a canonical copy is still the document the gate judged).
        if entry.url not in seen or entry.kind in QUARANTINE_KINDS:
            seen[entry.url] = entry

    for row in store.exclusions(conn, site, run_id):
        if not include_noise and reasons.is_noise(row["url"], row["rule"], row["detail"]):
            continue
        family = reasons.kind_of(row["rule"])
        add(Entry(row["url"], "excluded" if family == "rule" else family, reasons.exclusion(row["rule"], row["detail"]),
                  rule=row["rule"], detail=row["detail"], at=row["at"]))
    for row in store.errors(conn, site, run_id):
        if row["status"] is not None:
            add(Entry(row["url"], "not-found", reasons.http_status(row["status"]), rule=f"http-{row['status']}",
                      at=row["at"]))
        else:
            add(Entry(row["url"], "fetch-failed", f"could not be fetched ({row['kind'].replace('_', ' ')})",
                      rule=row["kind"], detail=row["detail"], at=row["at"]))
    for row in store.quarantined(conn, run_id):
        approved = row["status"] == "accepted"
        approval = ({"id": row["approval_id"], "reason": row["approval_reason"], "by": row["approved_by"],
                     "at": row["approved_at"]} if row["approval_id"] is not None else None)
        reason = reasons.quarantine(row["failures"])
        if approved:
            reason = f"approved by {row['approved_by']} ({row['approval_reason']}); was " + reason
        add(Entry(row["url"], "approved" if approved else "quarantined", reason, title=row["title"],
                  failures=row["failures"], content_hash=row["content_hash"], approval=approval))
    for url in (diff or {}).get("removed", []):
        if url not in seen:
            add(Entry(url, "removed", reasons.gone(), detail=f"in snapshot {diff.get('against')}"))
    result.entries = sorted(seen.values(), key=lambda e: (KINDS.index(e.kind), e.url))
    result.unrecorded = store.unrecorded_exclusions(conn, run_id)
    result.newer = [r for r in store.newer_runs(conn, site, run_id) if r["state"] != "published"] \
        if target.startswith("alias") else []
    return result


def removal_reasons(conn: psycopg.Connection, site: str, run_id: str, urls: Iterable[str]) -> dict[str, dict]:
    """For pages a snapshot no longer holds, why: ``{url: {"kind": ..., "reason": ...}}`` from ``run_id``'s ledgers."""
    wanted = set(urls)
    if not wanted:
        return {}
    try:
        entries = ledger(conn, site=site, run_id=run_id, include_noise=True).entries
    except NotFound:   # a snapshot built without a recorded run (loaded by hand): no ledgers to ask
        entries = []
    found = {e.url: {"kind": e.kind, "reason": e.reason} for e in entries if e.url in wanted}
    return {url: found.get(url) or {"kind": "removed", "reason": reasons.gone()} for url in sorted(wanted)}


def _target(conn, site: str | None, snapshot_id: int | None, run_id: str | None,
            alias: str) -> tuple[str, str | None, int | None, str, dict | None]:
    if snapshot_id is not None:
        row = store.snapshot_run(conn, snapshot_id)
        if row is None:
            raise NotFound(f"snapshot {snapshot_id} does not exist; `sitekb snapshots list` shows the snapshots")
        if site and row[0] != site:
            raise ConfigError(f"snapshot {snapshot_id} is of site {row[0]!r}, not {site!r}")
        return row[0], row[1], snapshot_id, f"snapshot {snapshot_id}", row[2]
    if run_id is not None:
        found = store.run_site(conn, run_id)
        if found is None:
            raise NotFound(f"no run {run_id!r}; `sitekb audit` and `sitekb snapshots list` name the runs")
        if site and found != site:
            raise ConfigError(f"run {run_id} is of site {found!r}, not {site!r}")
        snap = store.run_snapshot(conn, run_id)
        return found, run_id, snap[0] if snap else None, f"run {run_id}", snap[2] if snap else None
    assert site is not None
    live = store.live_run(conn, site, alias)
    if live is not None:
        snap = store.snapshot_run(conn, live[0])
        return site, live[1], live[0], f"alias {alias}", snap[2] if snap else None
    newest = store.newest_run(conn, site, validated=True) or store.newest_run(conn, site)
    if newest is None:
        raise NotFound(f"site {site!r} has no runs; `sitekb run {site}` makes one")
    snap = store.run_snapshot(conn, newest)
    return site, newest, snap[0] if snap else None, "newest run (nothing published)", snap[2] if snap else None
