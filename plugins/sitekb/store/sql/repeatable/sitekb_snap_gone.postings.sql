-- The "postings" of a snapshot that has none: no rows.
--
-- sitekb_api.search reads the unqualified name "postings" under the search path
-- pg_catalog, sitekb_snap_<id>, sitekb_snap_gone, ... . A snapshot built before
-- BM25 postings existed (until `sitekb db migrate` builds them) has no view of its
-- own, and the name lands here instead of on a caller's temporary objects; the
-- search then ranks that snapshot by cover density (ts_rank_cd), as before.
CREATE OR REPLACE VIEW sitekb_snap_gone.postings AS
    SELECT NULL::text AS lexeme, NULL::text AS chunk_id, NULL::real AS weight WHERE false;
