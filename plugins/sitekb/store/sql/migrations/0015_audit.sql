-- The audit log (`sitekb audit`, sitekb/store/audit.py) reads who did what from the
-- records each decision already leaves (alias moves, approvals and rejections,
-- quarantine approvals, run starts) and, for the acts that left none, from
-- sitekb.audit_events: pinning, unpinning and pruning snapshots by hand.
-- A rollback is told apart from a publish in the alias log.

ALTER TABLE sitekb.alias_events DROP CONSTRAINT IF EXISTS alias_events_decision_check;
ALTER TABLE sitekb.alias_events ADD CONSTRAINT alias_events_decision_check
    CHECK (decision IN ('moved', 'approved', 'rejected', 'rolled_back'));

CREATE TABLE sitekb.audit_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    action       text NOT NULL CHECK (action IN ('pinned', 'unpinned', 'pruned')),
    snapshot_id  bigint,
    actor        text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    details      jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_site_at ON sitekb.audit_events (site, at DESC);
