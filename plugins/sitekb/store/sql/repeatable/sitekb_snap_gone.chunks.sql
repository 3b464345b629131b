-- The "chunks" of a snapshot that has no view: an error.
--
-- sitekb_api.search reads the unqualified name "chunks" under the search path
-- pg_catalog, sitekb_snap_<id>, sitekb_snap_gone, ... . When a snapshot's own
-- view is missing (retention dropped it a moment ago), the name lands here and
-- raises SKB01 instead of falling through to a caller's temporary objects.
DROP VIEW IF EXISTS sitekb_snap_gone.chunks;
DROP FUNCTION IF EXISTS sitekb.snapshot_view_missing();

CREATE FUNCTION sitekb.snapshot_view_missing()
RETURNS TABLE (chunk_id text, url text, title text, heading_path text[], seq integer, content text,
               token_count integer, language text, tags text[], published text, embedding vector, tsv tsvector)
LANGUAGE plpgsql
AS $fn$
BEGIN
    RAISE EXCEPTION 'this snapshot has no search view' USING ERRCODE = 'SKB01';
END
$fn$;

CREATE VIEW sitekb_snap_gone.chunks AS SELECT * FROM sitekb.snapshot_view_missing();
