-- What a snapshot's readers read, made from its manifest (sitekb.snapshot_segments and
-- sitekb.tombstones, migration 0021): in schema sitekb_snapshots the view snap_<id> (its
-- chunks: every listed segment's rows but the tombstoned ones) and, when its BM25 terms
-- exist, snap_<id>_postings (the segments' postings of those chunks, weighted by BM25
-- with the snapshot's statistics, sitekb.build_postings); in schema sitekb_snap_<id> the
-- views "chunks" and "postings" over them that sitekb_api.search reads.
--
-- A base table holds the base's rows and those of every delta built on it, each tagged with
-- its segment_id; which segments are the snapshot's and its tombstones are one filter on
-- that id, evaluated on the rows an index scan returns (hashed "= ANY" and "<> ALL" of
-- constants), so an ORDER BY distance LIMIT k over the view is one HNSW scan, however many
-- deltas the snapshot holds, and a keyword lookup merges two (lexeme, impact) index scans,
-- the base's postings and its deltas'.
--
-- Called by the build and by compaction (which replaces the manifest and then the views:
-- the columns stay, so CREATE OR REPLACE swaps them under running sessions, whose plans
-- are invalidated), and by sitekb.ensure_search_views to repair.
CREATE OR REPLACE FUNCTION sitekb.snapshot_views(p_snapshot_id bigint)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_cols     text := 'chunk_id, url, title, heading_path, seq, content, token_count, language, tags, published, '
                       'embedding, tsv';
    v_rows     text := '';
    v_postings text := '';
    v_case     text := '';
    v_filter   text := '';
    v_seg      record;
    v_corpus   record;
    v_schema   text := 'sitekb_snap_' || p_snapshot_id;
    v_view     text := 'snap_' || p_snapshot_id;
    v_held     text;
    v_listed   bigint[] := '{}';
    v_stores   bigint[] := '{}';
    v_deltas   bigint[] := '{}';
BEGIN
    -- A search locks the views as it plans, outermost first (sitekb_snap_<id>.chunks, then
    -- the snap_<id> it reads); replacing them takes the same order, or the two deadlock.
    SELECT string_agg(format('%I.%I', n.schema, n.name), ', ' ORDER BY n.nth) INTO v_held
    FROM (VALUES (1, v_schema, 'chunks'), (2, v_schema, 'postings'), (3, 'sitekb_snapshots', v_view),
                 (4, 'sitekb_snapshots', v_view || '_postings')) n(nth, schema, name)
    WHERE to_regclass(format('%I.%I', n.schema, n.name)) IS NOT NULL;
    IF v_held IS NOT NULL THEN
        EXECUTE 'LOCK TABLE ' || v_held || ' IN ACCESS EXCLUSIVE MODE';
    END IF;
    FOR v_seg IN
        SELECT ss.segment_id, coalesce(g.stored_in, g.segment_id) AS stored_in,
               (SELECT array_agg(t.chunk_id ORDER BY t.chunk_id) FROM sitekb.tombstones t
                WHERE t.snapshot_id = ss.snapshot_id AND t.segment_id = ss.segment_id) AS gone
        FROM sitekb.snapshot_segments ss JOIN sitekb.segments g ON g.segment_id = ss.segment_id
        WHERE ss.snapshot_id = p_snapshot_id
        ORDER BY ss.position, ss.segment_id
    LOOP
        v_listed := v_listed || v_seg.segment_id;
        IF NOT v_seg.stored_in = ANY(v_stores) THEN
            -- One branch per base table: it holds the base's rows and every delta built on it.
            v_stores := v_stores || v_seg.stored_in;
            v_rows := v_rows || CASE WHEN v_rows = '' THEN '' ELSE ' UNION ALL ' END
                      || format('SELECT segment_id, %s FROM sitekb_snapshots.%I', v_cols, 'seg_' || v_seg.stored_in);
            v_postings := v_postings || CASE WHEN v_postings = '' THEN '' ELSE ' UNION ALL ' END
                          || format('SELECT segment_id, lexeme, chunk_id, tf, dl, impact FROM sitekb_snapshots.%I',
                                    'seg_' || v_seg.stored_in || '_postings');
        END IF;
        IF v_seg.segment_id <> v_seg.stored_in AND NOT v_seg.stored_in = ANY(v_deltas) THEN
            -- The deltas' postings have a table of their own (sitekb.build_segment_postings).
            v_deltas := v_deltas || v_seg.stored_in;
            v_postings := v_postings || ' UNION ALL '
                          || format('SELECT segment_id, lexeme, chunk_id, tf, dl, impact FROM sitekb_snapshots.%I',
                                    'seg_' || v_seg.stored_in || '_delta_postings');
        END IF;
        IF v_seg.gone IS NOT NULL THEN
            v_case := v_case || format(' WHEN %s THEN u.chunk_id <> ALL (%L::text[])', v_seg.segment_id, v_seg.gone);
        END IF;
    END LOOP;
    IF v_rows = '' THEN
        RAISE EXCEPTION 'snapshot % lists no segments', p_snapshot_id
            USING HINT = 'build it again (sitekb run or sitekb rebuild)';
    END IF;
    -- The snapshot's segments of the table (rows of deltas built later for newer snapshots are
    -- appended to it too), less its tombstones.
    v_filter := format(' WHERE u.segment_id = ANY (%L::bigint[])', v_listed);
    IF v_case <> '' THEN
        v_filter := v_filter || ' AND CASE u.segment_id' || v_case || ' ELSE true END';
    END IF;
    EXECUTE format('CREATE OR REPLACE VIEW sitekb_snapshots.%I AS SELECT %s FROM (%s) u%s',
                   v_view, 'u.' || replace(v_cols, ', ', ', u.'), v_rows, v_filter);
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', v_schema);
    EXECUTE format('CREATE OR REPLACE VIEW %I.chunks AS SELECT * FROM sitekb_snapshots.%I', v_schema, v_view);

    SELECT s.corpus_chunks AS n, s.corpus_length / greatest(s.corpus_chunks, 1) AS avgdl,
           to_regclass(format('%I.%I', 'sitekb_snapshots', v_view || '_terms')) IS NOT NULL AS has_terms
    INTO v_corpus FROM sitekb.snapshots s WHERE s.snapshot_id = p_snapshot_id;
    IF v_corpus.has_terms AND v_corpus.n IS NOT NULL THEN
        -- weight = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), k1 1.2, b 0.75,
        -- idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Lucene's, never negative): N, avgdl and
        -- each lexeme's df are the snapshot's, never a segment's.
        EXECUTE format(
            $q$CREATE OR REPLACE VIEW sitekb_snapshots.%1$I AS
               SELECT u.lexeme, u.chunk_id, u.impact,
                      (ln(1 + (%3$s::float8 - f.df + 0.5) / (f.df + 0.5))
                       * u.tf * (1.2 + 1) / (u.tf + 1.2 * (1 - 0.75 + 0.75 * u.dl / %4$s::float8)))::real AS weight
               FROM (%5$s) u JOIN sitekb_snapshots.%2$I f ON f.lexeme = u.lexeme%6$s$q$,
            v_view || '_postings', v_view || '_terms', v_corpus.n, greatest(v_corpus.avgdl, 1e-9), v_postings,
            v_filter);
        EXECUTE format('CREATE OR REPLACE VIEW %I.postings AS SELECT lexeme, chunk_id, weight, impact '
                       'FROM sitekb_snapshots.%I', v_schema, v_view || '_postings');
    END IF;
END
$fn$;
