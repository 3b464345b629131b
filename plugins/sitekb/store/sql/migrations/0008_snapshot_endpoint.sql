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
