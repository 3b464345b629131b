-- The BM25 postings of one segment, built once after the segment's load: a base's make the
-- table sitekb_snapshots.seg_<base>_postings (segment_id, lexeme, chunk_id, tf, dl, impact),
-- a delta's are appended to its base's seg_<base>_delta_postings.
--
-- A segment is shared by many snapshots, each with its own statistics, so a posting
-- keeps what does not depend on them: the lexeme's frequency in the chunk (tf, from
-- sitekb.bm25_terms) and the chunk's length (dl). A snapshot's view of its postings
-- (sitekb.snapshot_views) turns them into BM25 weights with the snapshot's own
-- document frequencies and average length (sitekb.build_postings), so a keyword score
-- is the same whichever segments the snapshot's chunks sit in.
--
-- impact orders a lexeme's postings for the search, which reads each lexeme's 2,000
-- most important, ties broken by chunk id: BM25's term-frequency part with a fixed
-- average length of 256 (within a snapshot every posting of a lexeme shares its idf, so
-- this is the order of the weights up to the difference between 256 and the snapshot's
-- average length). Fixed, not the segment's own average: every segment and every
-- snapshot orders alike, so the merged 2,000 of a base and its deltas are exactly the
-- 2,000 one table of the same rows would read, and rankings do not depend on how a
-- snapshot's rows are split. A lexeme keeps its 5,000 most important postings per
-- segment. Returns the number of postings.
--
-- p_chunk_ids, when given, are the delta's chunks: its rows are then read by primary key
-- rather than by a scan of its base's whole table for its segment_id.
DROP FUNCTION IF EXISTS sitekb.build_segment_postings(bigint);
CREATE OR REPLACE FUNCTION sitekb.build_segment_postings(p_segment_id bigint, p_chunk_ids text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_base     bigint;
    v_rows     text;
    v_postings text;
    v_count    bigint;
    v_where    text;
    v_query    text := $q$
           WITH terms AS MATERIALIZED (
                    SELECT t.chunk_id, b.lexeme, b.tf AS tf
                    FROM sitekb_snapshots.%1$I t CROSS JOIN LATERAL sitekb.bm25_terms(t.tsv) b %2$s),
                lengths AS (SELECT chunk_id, sum(tf)::real AS dl FROM terms GROUP BY chunk_id),
                weighted AS (
                    SELECT t.lexeme, t.chunk_id, t.tf, l.dl,
                           (t.tf * (1.2 + 1) / (t.tf + 1.2 * (1 - 0.75 + 0.75 * l.dl / 256.0)))::real AS impact
                    FROM terms t JOIN lengths l ON l.chunk_id = t.chunk_id),
                ranked AS (SELECT w.*, row_number() OVER (PARTITION BY w.lexeme ORDER BY w.impact DESC, w.chunk_id) AS r
                           FROM weighted w)
           SELECT %3$s lexeme, chunk_id, tf, dl, impact FROM ranked WHERE r <= 5000
           ORDER BY lexeme, impact DESC, chunk_id$q$;
BEGIN
    SELECT coalesce(stored_in, segment_id) INTO v_base FROM sitekb.segments WHERE segment_id = p_segment_id;
    v_rows := 'seg_' || v_base;
    v_postings := v_rows || '_postings';
    IF v_base = p_segment_id THEN
        EXECUTE format('DROP TABLE IF EXISTS sitekb_snapshots.%I CASCADE', v_postings);
        EXECUTE format('CREATE TABLE sitekb_snapshots.%I AS ' ||
                       format(v_query, v_rows, format('WHERE t.segment_id = %s', p_segment_id),
                              p_segment_id || '::bigint AS segment_id,'), v_postings);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        EXECUTE format('CREATE INDEX ON sitekb_snapshots.%I (lexeme, impact DESC, chunk_id) INCLUDE (segment_id, tf, dl)',
                       v_postings);
        EXECUTE format('ANALYZE sitekb_snapshots.%I', v_postings);
    ELSE
        -- A delta's postings go to a table of their own, small next to the base's: appending them
        -- to the base's (lexeme, impact) index touched pages all over it (seconds at 100,000 chunks).
        v_postings := v_rows || '_delta_postings';
        v_where := format('WHERE t.segment_id = %s', p_segment_id);
        IF p_chunk_ids IS NOT NULL THEN
            v_where := v_where || ' AND t.chunk_id = ANY ($1)';
        END IF;
        EXECUTE format($q$CREATE TABLE IF NOT EXISTS sitekb_snapshots.%I (segment_id bigint NOT NULL,
                              lexeme text NOT NULL, chunk_id text NOT NULL, tf real NOT NULL, dl real NOT NULL,
                              impact real NOT NULL)$q$, v_postings);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON sitekb_snapshots.%I (lexeme, impact DESC, chunk_id) '
                       'INCLUDE (segment_id, tf, dl)', v_postings || '_lexeme', v_postings);
        EXECUTE format('DELETE FROM sitekb_snapshots.%I WHERE segment_id = %s', v_postings, p_segment_id);
        EXECUTE format('INSERT INTO sitekb_snapshots.%I (segment_id, lexeme, chunk_id, tf, dl, impact) ' ||
                       format(v_query, v_rows, v_where, p_segment_id || '::bigint,'), v_postings)
            USING p_chunk_ids;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        EXECUTE format('ANALYZE sitekb_snapshots.%I', v_postings);
    END IF;
    RETURN v_count;
END
$fn$;
