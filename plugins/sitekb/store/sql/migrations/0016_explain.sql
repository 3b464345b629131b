-- What `sitekb explain` (and sitekb_api.explain) says about a passage's page, recorded
-- by the extract stage with each document (sitekb/store/documents.py):
--
-- fetched_at, etag, last_modified, page_hash: the fetch of the page this run's
-- document was made from (sitekb.pages holds only the latest fetch of a URL, so a
-- snapshot kept for rollback would otherwise show a later crawl's); fetched_at is
-- when the body was fetched or last confirmed unchanged by a 304.
-- extraction: what the extractor cut, e.g. {"nosnippet_removed": 2, "hidden_removed": 0,
-- "boilerplate_blocks": 1, "fallbacks": []}.
--
-- Documents extracted before this migration have NULLs and '{}': explain says "not recorded".
ALTER TABLE sitekb.documents
    ADD COLUMN fetched_at timestamptz,
    ADD COLUMN etag text,
    ADD COLUMN last_modified text,
    ADD COLUMN page_hash text,
    ADD COLUMN extraction jsonb NOT NULL DEFAULT '{}';
