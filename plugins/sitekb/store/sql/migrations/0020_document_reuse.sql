-- An unchanged page is not extracted again (sitekb/stages/extract.py): the extract stage
-- copies the newest document made from the same body (documents.page_hash) with the same
-- extraction inputs (extraction ->> 'inputs': extractor version, nosnippet selectors,
-- pruning rules), found through this index, one lookup per page of the run.
CREATE INDEX documents_reuse ON sitekb.documents (site, url, page_hash) WHERE correction_id IS NULL;
