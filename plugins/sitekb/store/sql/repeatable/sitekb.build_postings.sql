-- The BM25 statistics of a snapshot, counted from all its chunks: each lexeme's document
-- frequency and total frequency in table sitekb_snapshots.snap_<id>_terms (lexeme, df, tf) and the number of
-- chunks and the sum of their lengths in sitekb.snapshots (corpus_chunks, corpus_length).
-- With them sitekb.snapshot_views weights the postings of the snapshot's segments
-- (sitekb.build_segment_postings, built here for a segment that lacks them) into the
-- view "postings" that sitekb_api.search reads for keyword and hybrid search:
--
--   weight = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
--   idf    = ln(1 + (N - df + 0.5) / (df + 0.5))          (Lucene's, never negative)
--
-- tf and dl (the sum of a chunk's tf) from sitekb.bm25_terms, N the snapshot's chunks,
-- df a lexeme's chunks, k1 1.2 and b 0.75; a question's score is the sum of its
-- lexemes' weights. A full build (and `sitekb db migrate`, for a snapshot that has no
-- statistics) counts here; a refresh that adds a delta segment adjusts its base
-- snapshot's counts by the chunks that came and went (sitekb/store/segments.py), which
-- gives the same numbers (tests/db/test_segments.py). Returns the number of lexemes.
CREATE OR REPLACE FUNCTION sitekb.build_postings(p_snapshot_id bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_terms  text := 'snap_' || p_snapshot_id || '_terms';
    v_seg    bigint;
    v_count  bigint;
BEGIN
    FOR v_seg IN
        SELECT ss.segment_id FROM sitekb.snapshot_segments ss JOIN sitekb.segments g USING (segment_id)
        WHERE ss.snapshot_id = p_snapshot_id
          AND to_regclass(format('%I.%I', 'sitekb_snapshots',
                                 CASE WHEN g.stored_in IS NULL THEN 'seg_' || g.segment_id || '_postings'
                                 ELSE 'seg_' || g.stored_in || '_delta_postings' END)) IS NULL
        ORDER BY g.stored_in NULLS FIRST, g.segment_id   -- a base makes the table its deltas append to
    LOOP
        PERFORM sitekb.build_segment_postings(v_seg);
    END LOOP;
    -- The view over the chunks first: the counts below read it.
    PERFORM sitekb.snapshot_views(p_snapshot_id);
    EXECUTE format('DROP TABLE IF EXISTS sitekb_snapshots.%I CASCADE', v_terms);
    EXECUTE format(
        $q$CREATE TABLE sitekb_snapshots.%1$I AS
           SELECT b.lexeme, count(*)::integer AS df, sum(b.tf)::float8 AS tf
           FROM sitekb_snapshots.%2$I t CROSS JOIN LATERAL sitekb.bm25_terms(t.tsv) b
           GROUP BY b.lexeme$q$, v_terms, 'snap_' || p_snapshot_id);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    EXECUTE format('ALTER TABLE sitekb_snapshots.%I ADD PRIMARY KEY (lexeme)', v_terms);
    -- The chunks' total length is the sum of every lexeme's frequencies: no second pass over the chunks.
    EXECUTE format(
        $q$UPDATE sitekb.snapshots s SET corpus_chunks = (SELECT count(*) FROM sitekb_snapshots.%1$I),
                                         corpus_length = (SELECT coalesce(sum(tf), 0) FROM sitekb_snapshots.%2$I),
                                         bm25_recipe = sitekb.bm25_recipe()
           WHERE s.snapshot_id = %3$s$q$, 'snap_' || p_snapshot_id, v_terms, p_snapshot_id);
    PERFORM sitekb.snapshot_views(p_snapshot_id);
    RETURN v_count;
END
$fn$;
