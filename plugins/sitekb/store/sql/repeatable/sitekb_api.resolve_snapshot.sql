-- Which snapshot a request reads: what the site's alias (default production) points
-- to, or a pinned snapshot id. Raises no_data_found (P0002) with a message that says
-- what to do when there is none.
--
-- A frontend only ever gets snapshots that are or were published and still have
-- their table. An operator may also read a snapshot that is built but not
-- published (the quality gate asks its golden questions of it before it goes
-- live) by pinning its id after SET sitekb.include_unpublished = on; both are
-- needed, the setting and USAGE on schema sitekb, which sitekb_reader never has.
CREATE OR REPLACE FUNCTION sitekb_api.resolve_snapshot(site text, alias text DEFAULT 'production',
                                                       snapshot_id bigint DEFAULT NULL)
RETURNS sitekb_api.resolved_snapshot
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema:vector@, pg_temp
AS $fn$
DECLARE
    v_result  sitekb_api.resolved_snapshot;
    v_anybody boolean := coalesce(current_setting('sitekb.include_unpublished', true), '') IN ('on', 'true', '1')
                         AND has_schema_privilege(session_user, 'sitekb', 'USAGE');
BEGIN
    IF $3 IS NOT NULL THEN
        SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions,
               s.embedding_base_url, s.embedding_api_key_env
          INTO v_result
          FROM sitekb.snapshots s
         WHERE s.snapshot_id = $3 AND s.table_name IS NOT NULL
           AND (s.state IN ('published', 'retired') OR v_anybody)
           AND ($1 IS NULL OR s.site = $1);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'snapshot % is not available%', $3,
                CASE WHEN $1 IS NULL THEN '' ELSE format(' for site %s', $1) END
                USING ERRCODE = 'no_data_found',
                      HINT = 'only published snapshots (and earlier published ones not yet retired) can be queried; '
                             'SELECT * FROM sitekb_api.snapshots lists them';
        END IF;
        RETURN v_result;
    END IF;
    SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions,
           s.embedding_base_url, s.embedding_api_key_env
      INTO v_result
      FROM sitekb.aliases a JOIN sitekb.snapshots s ON s.snapshot_id = a.snapshot_id
     WHERE a.site = $1 AND a.alias = coalesce($2, 'production') AND s.table_name IS NOT NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'site % has no snapshot published as %', $1, coalesce($2, 'production')
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT * FROM sitekb_api.aliases lists the published sites and aliases';
    END IF;
    RETURN v_result;
END
$fn$;
