-- Quality gate: content owners' approvals of quarantined documents, and the
-- measured values of every document check.
--
-- An approval is tied to the content hash of the document it approved: it
-- lets that exact text through every later run, and stops applying as soon as
-- the page changes (a new hash needs a new approval).

CREATE TABLE IF NOT EXISTS sitekb.quarantine_approvals (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    url          text NOT NULL,
    content_hash text NOT NULL,
    reason       text NOT NULL CHECK (btrim(reason) <> ''),
    approved_by  text NOT NULL,
    approved_at  timestamptz NOT NULL DEFAULT now(),
    run_id       text,                          -- the run whose quarantine was approved
    failures     jsonb NOT NULL DEFAULT '[]',   -- the failed checks the approver saw
    UNIQUE (site, url, content_hash)
);

-- visible_words: words a reader sees on the whole page (for the boilerplate share);
-- measures: every measured value of the document suite, failed or not;
-- approval_id: set when a failing document was let through by an approval.
ALTER TABLE sitekb.documents
    ADD COLUMN IF NOT EXISTS visible_words integer,
    ADD COLUMN IF NOT EXISTS measures jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS approval_id bigint
        REFERENCES sitekb.quarantine_approvals (id) ON DELETE SET NULL;

CREATE INDEX IF NOT EXISTS documents_site_status ON sitekb.documents (site, status);
