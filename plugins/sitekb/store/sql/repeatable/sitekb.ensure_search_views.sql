-- Give every snapshot that has its rows what sitekb_api.search reads in schema
-- sitekb_snap_<id>: the views "chunks" and "postings" (sitekb.snapshot_views) and the
-- BM25 statistics behind "postings" (sitekb.build_postings). The build creates them and
-- retention drops them, so this only repairs: a view or the statistics dropped by hand,
-- or a snapshot built by a sitekb older than segments, whose table
-- sitekb_snapshots.snap_<id> becomes the base segment of its own manifest (renamed, not
-- copied: its indexes stay; a segment_id column is added, without a rewrite) and gets its
-- segment's postings. sitekb/store/schema.py
-- calls it on every migrate; it returns the ids it repaired.
CREATE OR REPLACE FUNCTION sitekb.ensure_search_views()
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_snap  record;
    v_seg   bigint;
    v_pk    name;
    v_built boolean := false;
BEGIN
    FOR v_snap IN
        SELECT s.snapshot_id, s.site, s.run_id, s.embedding_model, s.dimensions, s.corpus_chunks,
               c.relkind AS kind,
               EXISTS (SELECT 1 FROM sitekb.snapshot_segments ss WHERE ss.snapshot_id = s.snapshot_id) AS listed,
               to_regclass(format('%I.%I', 'sitekb_snap_' || s.snapshot_id, 'chunks')) IS NULL AS no_view,
               to_regclass(format('%I.%I', 'sitekb_snapshots', 'snap_' || s.snapshot_id || '_terms')) IS NULL AS no_terms,
               to_regclass(format('%I.%I', 'sitekb_snap_' || s.snapshot_id, 'postings')) IS NULL AS no_postings,
               EXISTS (SELECT 1 FROM sitekb.snapshot_segments ss JOIN sitekb.segments g USING (segment_id)
                       WHERE ss.snapshot_id = s.snapshot_id
                         AND to_regclass(format('%I.%I', 'sitekb_snapshots', CASE WHEN g.stored_in IS NULL THEN 'seg_' || g.segment_id || '_postings'
                                 ELSE 'seg_' || g.stored_in || '_delta_postings' END))
                             IS NULL) AS no_segment_postings
        FROM sitekb.snapshots s
        LEFT JOIN pg_class c ON c.oid = to_regclass(format('%I.%I', 'sitekb_snapshots', 'snap_' || s.snapshot_id))
        WHERE s.table_name IS NOT NULL
        ORDER BY s.snapshot_id
    LOOP
        IF v_snap.kind = 'r' AND NOT v_snap.listed THEN
            -- Built before segments: its table becomes its base segment.
            INSERT INTO sitekb.segments (site, kind, model, dimensions, run_id, built_for)
            VALUES (v_snap.site, 'base', v_snap.embedding_model, v_snap.dimensions, v_snap.run_id, v_snap.snapshot_id)
            RETURNING segment_id INTO v_seg;
            EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', 'sitekb_snap_' || v_snap.snapshot_id);
            EXECUTE format('DROP TABLE IF EXISTS sitekb_snapshots.%I CASCADE', 'snap_' || v_snap.snapshot_id || '_postings');
            EXECUTE format('ALTER TABLE sitekb_snapshots.%I RENAME TO %I', 'snap_' || v_snap.snapshot_id, 'seg_' || v_seg);
            -- A base's table tags its rows with their segment (its deltas are appended to it).
            EXECUTE format('ALTER TABLE sitekb_snapshots.%I ADD COLUMN segment_id bigint NOT NULL DEFAULT %s',
                           'seg_' || v_seg, v_seg);
            FOR v_pk IN SELECT conname FROM pg_constraint
                        WHERE conrelid = format('sitekb_snapshots.%I', 'seg_' || v_seg)::regclass AND contype = 'p' LOOP
                EXECUTE format('ALTER TABLE sitekb_snapshots.%I DROP CONSTRAINT %I', 'seg_' || v_seg, v_pk);
            END LOOP;
            EXECUTE format('ALTER TABLE sitekb_snapshots.%I ADD PRIMARY KEY (chunk_id, segment_id)', 'seg_' || v_seg);
            EXECUTE format('UPDATE sitekb.segments SET rows = (SELECT count(*) FROM sitekb_snapshots.%I) '
                           'WHERE segment_id = %s', 'seg_' || v_seg, v_seg);
            INSERT INTO sitekb.snapshot_segments (snapshot_id, segment_id, position) VALUES (v_snap.snapshot_id, v_seg, 0);
            PERFORM sitekb.build_postings(v_snap.snapshot_id);
            v_built := true;
        ELSIF NOT v_snap.listed THEN
            CONTINUE;   -- no rows and no manifest: nothing to repair from (retention's job)
        ELSIF v_snap.no_terms OR v_snap.corpus_chunks IS NULL OR v_snap.no_segment_postings THEN
            PERFORM sitekb.build_postings(v_snap.snapshot_id);
            v_built := true;
        ELSIF v_snap.no_view OR v_snap.no_postings OR v_snap.kind IS NULL THEN
            PERFORM sitekb.snapshot_views(v_snap.snapshot_id);
            v_built := v_built OR v_snap.no_postings;
        ELSE
            CONTINUE;
        END IF;
        RETURN NEXT v_snap.snapshot_id;
    END LOOP;
    IF v_built THEN
        -- A session's cached search plan for a snapshot without postings read the name
        -- "postings" as sitekb_snap_gone's (empty) view; a new view earlier on the search path
        -- does not invalidate that plan, replacing the view it read does.
        -- (sitekb_snap_gone.postings.sql owns its definition: it is read back, not repeated.)
        EXECUTE format('CREATE OR REPLACE VIEW %I.%I AS %s', 'sitekb_snap_gone', 'postings',
                       pg_get_viewdef('sitekb_snap_gone.postings'::regclass));
    END IF;
END
$fn$;
