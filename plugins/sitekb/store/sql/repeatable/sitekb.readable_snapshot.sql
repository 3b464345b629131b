-- The snapshot a request may read, or a row of nulls: what the site's alias (default
-- production) points to, or a pinned snapshot id that is (or was) published and still
-- has its table. A pinned snapshot that is built but not published is readable by a
-- session that set sitekb.include_unpublished = on and may use schema sitekb (an
-- operator: the quality gate asks its golden questions so; sitekb_reader never can).
--
-- Internal, and plain SQL on purpose: sitekb_api.search calls it on every question, and
-- a function without a SET clause costs a fraction of one that saves and restores
-- settings. sitekb_api.resolve_snapshot adds the explanation when there is nothing to read.
CREATE OR REPLACE FUNCTION sitekb.readable_snapshot(p_site text, p_alias text, p_snapshot_id bigint)
RETURNS sitekb_api.resolved_snapshot
LANGUAGE sql STABLE
AS $fn$
    SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions,
           s.embedding_base_url, s.embedding_api_key_env
    FROM sitekb.aliases a JOIN sitekb.snapshots s ON s.snapshot_id = a.snapshot_id
    WHERE p_snapshot_id IS NULL AND a.site = p_site AND a.alias = coalesce(p_alias, 'production')
      AND s.table_name IS NOT NULL
    UNION ALL
    SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions,
           s.embedding_base_url, s.embedding_api_key_env
    FROM sitekb.snapshots s
    WHERE s.snapshot_id = p_snapshot_id AND s.table_name IS NOT NULL AND (p_site IS NULL OR s.site = p_site)
      AND (s.state IN ('published', 'retired')
           OR (coalesce(current_setting('sitekb.include_unpublished', true), '') IN ('on', 'true', '1')
               AND has_schema_privilege(session_user, 'sitekb', 'USAGE')))
$fn$;
