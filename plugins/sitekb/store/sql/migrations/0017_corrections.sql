-- Content owners' corrections (`sitekb corrections`, sitekb/corrections.py): a page's
-- extracted text replaced by a text an editor fixed (a transcript, a garbled table),
-- from the next run on, for as long as the page stays as it was.
--
-- A correction is keyed by the hash of the text the extractor made from the page
-- when it was added (content_hash). The extract stage gives a document of that URL
-- and that hash the corrected text; when the extractor makes a different text (the
-- page changed), the correction expires: expired_at, the new hash and the run that
-- saw it are recorded, the run warns, and the page's own text is used again.
-- One active correction per page; removed and expired ones stay for the record.
CREATE TABLE sitekb.corrections (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site          text NOT NULL,
    url           text NOT NULL,
    content_hash  text NOT NULL,
    markdown      text NOT NULL CHECK (btrim(markdown) <> ''),
    reason        text NOT NULL CHECK (btrim(reason) <> ''),
    added_by      text NOT NULL,
    added_at      timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired', 'removed')),
    expired_at    timestamptz,
    expired_hash  text,            -- the page's new content hash, which ended the correction
    expired_run   text,            -- the run whose extraction saw it
    removed_at    timestamptz,
    removed_by    text
);
CREATE UNIQUE INDEX corrections_one_active ON sitekb.corrections (site, url) WHERE status = 'active';
CREATE INDEX corrections_site ON sitekb.corrections (site, added_at DESC);

-- A corrected document: content_hash and markdown are the corrected text's (approvals and
-- every later stage judge what is published); source_hash is the hash of the text the
-- extractor made (what the correction is keyed by); correction_id names the correction.
ALTER TABLE sitekb.documents
    ADD COLUMN source_hash text,
    ADD COLUMN correction_id bigint REFERENCES sitekb.corrections (id) ON DELETE SET NULL;

-- Corrections are audited with the acts that leave no other record (sitekb/store/audit.py).
ALTER TABLE sitekb.audit_events DROP CONSTRAINT IF EXISTS audit_events_action_check;
ALTER TABLE sitekb.audit_events ADD CONSTRAINT audit_events_action_check
    CHECK (action IN ('pinned', 'unpinned', 'pruned', 'corrected', 'correction removed',
                      'correction expired'));
