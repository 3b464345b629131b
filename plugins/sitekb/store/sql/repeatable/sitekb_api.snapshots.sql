-- Snapshots a frontend may query (published, or published before and not yet
-- dropped by retention), with their aliases and the model and server that embedded them.
-- CREATE OR REPLACE keeps the view (and its grants) while it is replaced; a change that
-- removes or retypes a column needs a migration that drops it first.
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
