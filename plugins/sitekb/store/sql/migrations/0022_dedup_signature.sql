-- The near-duplicate check's signature of each document's text (sitekb.quality.duplicates.signature:
-- the hash of its normalized words and its MinHash values), written by the validate stage. A later
-- run's document with the same text takes it up instead of hashing the text again: a refresh or a
-- rebuild hashes only the pages that changed, while the check still compares every document.
ALTER TABLE sitekb.documents ADD COLUMN dedup_signature bytea;
