-- The BM25 postings of a snapshot: table sitekb_snapshots.snap_<id>_postings
-- (lexeme, chunk_id, weight) and the view "postings" over it in schema
-- sitekb_snap_<id>, which sitekb_api.search reads for keyword and hybrid search.
--
-- A snapshot never changes once built, so each posting carries its whole BM25
-- impact, computed here once with the snapshot's own statistics:
--
--   weight = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
--   idf    = ln(1 + (N - df + 0.5) / (df + 0.5))          (Lucene's, never negative)
--
-- tf and dl (the sum of a chunk's tf) from sitekb.bm25_terms, N the snapshot's
-- chunks, df a lexeme's chunks, k1 1.2 and b 0.75; a question's score is the sum
-- of its lexemes' weights. A lexeme keeps its 5,000 heaviest postings: the
-- search reads at most 2,000 of them, and the rest of a very common word adds
-- little to any score. Loaded in (lexeme, weight) order so that the index scan
-- of one lexeme reads neighbouring pages. Called by the build
-- (sitekb/store/snapshot_tables.py) and by sitekb.ensure_search_views for a
-- snapshot built before postings existed; returns the number of postings.
CREATE OR REPLACE FUNCTION sitekb.build_postings(p_snapshot_id bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_chunks   text := 'snap_' || p_snapshot_id;
    v_postings text := 'snap_' || p_snapshot_id || '_postings';
    v_schema   text := 'sitekb_snap_' || p_snapshot_id;
    v_rows     bigint;
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS sitekb_snapshots.%I CASCADE', v_postings);
    EXECUTE format(
        $q$CREATE TABLE sitekb_snapshots.%1$I AS
           WITH terms AS MATERIALIZED (
                    SELECT t.chunk_id, b.lexeme, b.tf::float8 AS tf
                    FROM sitekb_snapshots.%2$I t CROSS JOIN LATERAL sitekb.bm25_terms(t.tsv) b),
                lengths AS (SELECT chunk_id, sum(tf) AS dl FROM terms GROUP BY chunk_id),
                corpus AS (SELECT count(*)::float8 AS n, coalesce(sum(l.dl), 0) / greatest(count(*), 1) AS avgdl
                           FROM sitekb_snapshots.%2$I c LEFT JOIN lengths l ON l.chunk_id = c.chunk_id),
                frequencies AS (SELECT lexeme, count(*)::float8 AS df FROM terms GROUP BY lexeme),
                weighted AS (
                    SELECT t.lexeme, t.chunk_id,
                           (ln(1 + (c.n - f.df + 0.5) / (f.df + 0.5))
                            * t.tf * (1.2 + 1) / (t.tf + 1.2 * (1 - 0.75 + 0.75 * l.dl / c.avgdl)))::real AS weight
                    FROM terms t JOIN lengths l ON l.chunk_id = t.chunk_id
                    JOIN frequencies f ON f.lexeme = t.lexeme CROSS JOIN corpus c),
                ranked AS (SELECT w.*, row_number() OVER (PARTITION BY w.lexeme ORDER BY w.weight DESC, w.chunk_id) AS r
                           FROM weighted w)
           SELECT lexeme, chunk_id, weight FROM ranked WHERE r <= 5000 ORDER BY lexeme, weight DESC, chunk_id$q$,
        v_postings, v_chunks);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    EXECUTE format('CREATE INDEX ON sitekb_snapshots.%I (lexeme, weight DESC) INCLUDE (chunk_id)', v_postings);
    EXECUTE format('ANALYZE sitekb_snapshots.%I', v_postings);
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', v_schema);
    EXECUTE format('CREATE OR REPLACE VIEW %I.postings AS SELECT lexeme, chunk_id, weight FROM sitekb_snapshots.%I',
                   v_schema, v_postings);
    RETURN v_rows;
END
$fn$;
