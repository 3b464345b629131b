-- Give every snapshot that has its table what sitekb_api.search reads in schema
-- sitekb_snap_<id>: the view "chunks" and the BM25 postings (sitekb.build_postings,
-- table and view "postings"). The build creates them and retention drops them, so
-- this only repairs: a snapshot built by a sitekb older than its search view or its
-- postings, or a view dropped by hand. sitekb/store/schema.py calls it on every
-- migrate; it returns the ids it repaired.
CREATE OR REPLACE FUNCTION sitekb.ensure_search_views()
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_snap  record;
    v_built boolean := false;
BEGIN
    FOR v_snap IN
        SELECT s.snapshot_id, s.table_name,
               to_regclass(format('%I.%I', 'sitekb_snap_' || s.snapshot_id, 'chunks')) IS NULL AS no_view,
               to_regclass(format('%I.%I', 'sitekb_snapshots', s.table_name || '_postings')) IS NULL AS no_postings,
               to_regclass(format('%I.%I', 'sitekb_snap_' || s.snapshot_id, 'postings')) IS NULL AS no_postings_view
        FROM sitekb.snapshots s
        WHERE s.table_name IS NOT NULL
          AND to_regclass(format('%I.%I', 'sitekb_snapshots', s.table_name)) IS NOT NULL
        ORDER BY s.snapshot_id
    LOOP
        CONTINUE WHEN NOT (v_snap.no_view OR v_snap.no_postings OR v_snap.no_postings_view);
        IF v_snap.no_view THEN
            EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', 'sitekb_snap_' || v_snap.snapshot_id);
            EXECUTE format('CREATE VIEW %I.chunks AS SELECT * FROM %I.%I', 'sitekb_snap_' || v_snap.snapshot_id,
                           'sitekb_snapshots', v_snap.table_name);
        END IF;
        IF v_snap.no_postings THEN
            PERFORM sitekb.build_postings(v_snap.snapshot_id);
            v_built := true;
        ELSIF v_snap.no_postings_view THEN
            EXECUTE format('CREATE VIEW %I.postings AS SELECT lexeme, chunk_id, weight FROM %I.%I',
                           'sitekb_snap_' || v_snap.snapshot_id, 'sitekb_snapshots', v_snap.table_name || '_postings');
            v_built := true;
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
