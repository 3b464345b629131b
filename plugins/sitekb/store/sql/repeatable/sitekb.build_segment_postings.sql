-- The BM25 postings of one segment: table sitekb_snapshots.seg_<id>_postings
-- (lexeme, chunk_id, tf, dl, impact), built once after the segment's load.
--
-- A segment is shared by many snapshots, each with its own statistics, so a posting
-- keeps what does not depend on them: the lexeme's frequency in the chunk (tf, from
-- sitekb.bm25_terms) and the chunk's length (dl). A snapshot's view of its postings
-- (sitekb.snapshot_views) turns them into BM25 weights with the snapshot's own
-- document frequencies and average length (sitekb.build_postings), so a keyword score
-- is the same whichever segments the snapshot's chunks sit in.
--
-- impact orders a lexeme's postings for the search, which reads each lexeme's 2,000
-- most important: BM25's term-frequency part with this segment's average length
-- (within a snapshot every posting of a lexeme shares its idf, so this is the order of
-- the weights, up to the difference between the segment's and the snapshot's average
-- length). A lexeme keeps its 5,000 most important postings per segment. Returns the
-- number of postings.
CREATE OR REPLACE FUNCTION sitekb.build_segment_postings(p_segment_id bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_rows     text := 'seg_' || p_segment_id;
    v_postings text := 'seg_' || p_segment_id || '_postings';
    v_count    bigint;
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS sitekb_snapshots.%I CASCADE', v_postings);
    EXECUTE format(
        $q$CREATE TABLE sitekb_snapshots.%1$I AS
           WITH terms AS MATERIALIZED (
                    SELECT t.chunk_id, b.lexeme, b.tf AS tf
                    FROM sitekb_snapshots.%2$I t CROSS JOIN LATERAL sitekb.bm25_terms(t.tsv) b),
                lengths AS (SELECT chunk_id, sum(tf)::real AS dl FROM terms GROUP BY chunk_id),
                corpus AS (SELECT coalesce(avg(dl), 1)::float8 AS avgdl FROM lengths),
                weighted AS (
                    SELECT t.lexeme, t.chunk_id, t.tf, l.dl,
                           (t.tf * (1.2 + 1) / (t.tf + 1.2 * (1 - 0.75 + 0.75 * l.dl / c.avgdl)))::real AS impact
                    FROM terms t JOIN lengths l ON l.chunk_id = t.chunk_id CROSS JOIN corpus c),
                ranked AS (SELECT w.*, row_number() OVER (PARTITION BY w.lexeme ORDER BY w.impact DESC, w.chunk_id) AS r
                           FROM weighted w)
           SELECT lexeme, chunk_id, tf, dl, impact FROM ranked WHERE r <= 5000
           ORDER BY lexeme, impact DESC, chunk_id$q$,
        v_postings, v_rows);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    EXECUTE format('CREATE INDEX ON sitekb_snapshots.%I (lexeme, impact DESC) INCLUDE (chunk_id, tf, dl)', v_postings);
    EXECUTE format('ANALYZE sitekb_snapshots.%I', v_postings);
    RETURN v_count;
END
$fn$;
