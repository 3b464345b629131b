-- Which snapshot a request reads (sitekb.readable_snapshot says which may be read):
-- what the site's alias (default production) points to, or a pinned snapshot id.
-- Raises no_data_found (P0002) with a message that says what to do when there is none.
CREATE OR REPLACE FUNCTION sitekb_api.resolve_snapshot(site text, alias text DEFAULT 'production',
                                                       snapshot_id bigint DEFAULT NULL)
RETURNS sitekb_api.resolved_snapshot
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_result sitekb_api.resolved_snapshot := sitekb.readable_snapshot($1, $2, $3);
BEGIN
    IF v_result.snapshot_id IS NOT NULL THEN
        RETURN v_result;
    END IF;
    IF $3 IS NOT NULL THEN
        RAISE EXCEPTION 'snapshot % is not available%', $3,
            CASE WHEN $1 IS NULL THEN '' ELSE format(' for site %s', $1) END
            USING ERRCODE = 'no_data_found',
                  HINT = 'only published snapshots (and earlier published ones not yet retired) can be queried; '
                         'SELECT * FROM sitekb_api.snapshots lists them';
    END IF;
    RAISE EXCEPTION 'site % has no snapshot published as %', $1, coalesce($2, 'production')
        USING ERRCODE = 'no_data_found',
              HINT = 'SELECT * FROM sitekb_api.aliases lists the published sites and aliases';
END
$fn$;
