-- Give every snapshot that has its table the view sitekb_api.search reads (schema
-- sitekb_snap_<id>, view "chunks"). The build creates both and retention drops both,
-- so this only repairs: a snapshot built by a sitekb older than its search view, or a
-- view dropped by hand. sitekb/store/schema.py calls it on every migrate; it returns
-- the ids it repaired.
CREATE OR REPLACE FUNCTION sitekb.ensure_search_views()
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_snap record;
BEGIN
    FOR v_snap IN
        SELECT s.snapshot_id, s.table_name FROM sitekb.snapshots s
        WHERE s.table_name IS NOT NULL
          AND to_regclass(format('%I.%I', 'sitekb_snapshots', s.table_name)) IS NOT NULL
          AND to_regclass(format('%I.%I', 'sitekb_snap_' || s.snapshot_id, 'chunks')) IS NULL
        ORDER BY s.snapshot_id
    LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', 'sitekb_snap_' || v_snap.snapshot_id);
        EXECUTE format('CREATE VIEW %I.chunks AS SELECT * FROM %I.%I', 'sitekb_snap_' || v_snap.snapshot_id,
                       'sitekb_snapshots', v_snap.table_name);
        RETURN NEXT v_snap.snapshot_id;
    END LOOP;
END
$fn$;
