-- Every snapshot gets a schema sitekb_snap_<id> holding one view, chunks, over
-- its table, so that sitekb_api.search runs one fixed statement whose plan a
-- session caches (a plan is tied to the search_path it was made under).
-- snapshots.build creates both, retention drops both; this migration gives the
-- snapshots built before it their view.
--
-- sitekb_snap_gone follows every snapshot schema on the search path: its view
-- "chunks" raises (../repeatable/), so an unqualified name can never reach a
-- caller's pg_temp.

CREATE SCHEMA IF NOT EXISTS sitekb_snap_gone;

-- Snapshots recorded before credentials were stripped at record time (sitekb_api.snapshots
-- shows this column to frontends).
UPDATE sitekb.snapshots
   SET embedding_base_url = regexp_replace(embedding_base_url, '^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@', '\1')
 WHERE embedding_base_url ~ '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@]*@';

DO $do$
DECLARE
    v_id bigint;
BEGIN
    FOR v_id IN
        SELECT s.snapshot_id FROM sitekb.snapshots s
        WHERE s.table_name IS NOT NULL AND to_regclass(format('%I.%I', 'sitekb_snapshots', s.table_name)) IS NOT NULL
    LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', 'sitekb_snap_' || v_id);
        EXECUTE format('CREATE OR REPLACE VIEW %I.chunks AS SELECT * FROM %I.%I', 'sitekb_snap_' || v_id,
                       'sitekb_snapshots', (SELECT table_name FROM sitekb.snapshots WHERE snapshot_id = v_id));
    END LOOP;
END
$do$;
