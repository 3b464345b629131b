-- The "postings" of a snapshot that has none: no rows.
--
-- sitekb_api.search reads the unqualified name "postings" under the search path
-- pg_catalog, sitekb_snap_<id>, sitekb_snap_gone, ... . A snapshot without BM25
-- statistics (its view dropped, until `sitekb db migrate` builds them again) has no
-- view of its own, and the name lands here instead of on a caller's temporary objects;
-- the search then ranks that snapshot by cover density (ts_rank_cd).
DROP VIEW IF EXISTS sitekb_snap_gone.postings;
CREATE VIEW sitekb_snap_gone.postings AS
    SELECT NULL::text AS lexeme, NULL::text AS chunk_id, NULL::real AS weight, NULL::real AS impact WHERE false;
