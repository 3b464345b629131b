-- Where a snapshot's embeddings came from, so its queries go to the same place.
--
-- A site may embed through any OpenAI-compatible server (embedding.base_url)
-- with a key from a variable it names (embedding.api_key_env). Queries must be
-- embedded by that same server, wherever they run: the HTTP API, the CLI, a
-- frontend that embeds for itself. Both are recorded when the snapshot is
-- created (the URL as resolved at build time; only the variable's name, never a
-- key) and returned by sitekb_api.resolve_snapshot and the snapshots view.

ALTER TABLE sitekb.snapshots
    ADD COLUMN embedding_base_url text,
    ADD COLUMN embedding_api_key_env text;

ALTER TYPE sitekb_api.resolved_snapshot
    ADD ATTRIBUTE embedding_base_url text,
    ADD ATTRIBUTE embedding_api_key_env text;

CREATE OR REPLACE FUNCTION sitekb_api.resolve_snapshot(site text, alias text DEFAULT 'production', snapshot_id bigint DEFAULT NULL)
RETURNS sitekb_api.resolved_snapshot
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_result sitekb_api.resolved_snapshot;
BEGIN
    IF $3 IS NOT NULL THEN
        SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions,
               s.embedding_base_url, s.embedding_api_key_env
          INTO v_result
          FROM sitekb.snapshots s
         WHERE s.snapshot_id = $3 AND s.table_name IS NOT NULL AND s.state IN ('published', 'retired')
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

-- New columns go at the end of the view (CREATE OR REPLACE VIEW may only append).
CREATE OR REPLACE VIEW sitekb_api.snapshots AS
SELECT s.snapshot_id, s.site, s.state,
       coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases,
       s.embedding_provider, s.embedding_model, s.dimensions,
       (s.counts ->> 'chunks')::integer AS chunks, (s.counts ->> 'documents')::integer AS documents,
       s.config_hash, s.extractor_version, s.chunker_version, s.pinned, s.created_at, s.built_at,
       s.embedding_base_url, s.embedding_api_key_env
FROM sitekb.snapshots s LEFT JOIN sitekb.aliases a ON a.snapshot_id = s.snapshot_id
WHERE s.table_name IS NOT NULL AND s.state IN ('published', 'retired')
GROUP BY s.snapshot_id;

-- As in 0005: pg_catalog plus the vector extension's schema.
DO $do$
DECLARE
    v_ext_schema text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'vector');
BEGIN
    EXECUTE format('ALTER FUNCTION sitekb_api.resolve_snapshot(text, text, bigint) '
                   'SET search_path = pg_catalog, %I, pg_temp', v_ext_schema);
END
$do$;
