-- Messaging pivots (sitekb/messaging.py, `sitekb messaging`): for every snapshot, each
-- messaging rule of its site config (a retired term or claim) with the pages of the
-- snapshot that still use it and the pages the gate held back for it. A rule with no
-- page left has a row too: that is how a finished pivot reads.
--
-- pages / held_back: [{url, title, count, excerpt, chunk_ids}], excerpt being a few
-- words around the first hit; chunk_ids: every chunk of the snapshot that uses the rule.
-- A snapshot's rows go with its record (history trimming deletes old records).

CREATE TABLE sitekb.messaging_findings (
    snapshot_id  bigint NOT NULL REFERENCES sitekb.snapshots (snapshot_id) ON DELETE CASCADE,
    position     integer NOT NULL,               -- the rule's place in the site config
    rule         text NOT NULL,                  -- its name, else its term or pattern
    kind         text NOT NULL CHECK (kind IN ('term', 'pattern')),
    match        text NOT NULL,                  -- the term or the pattern
    policy       text NOT NULL CHECK (policy IN ('report', 'quarantine', 'block')),
    replacement  text,
    note         text,
    reason       text NOT NULL,                  -- the rule for people: retired term "X" (use "Y")
    pages        jsonb NOT NULL DEFAULT '[]',
    chunk_ids    text[] NOT NULL DEFAULT '{}',
    held_back    jsonb NOT NULL DEFAULT '[]',
    scanned_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, rule)
);
