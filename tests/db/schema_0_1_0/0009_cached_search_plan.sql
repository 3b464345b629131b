-- The common vector search runs a statement whose plan is cached per session.
--
-- Snapshot tables are created at run time, so until now every search built its
-- query with format() and EXECUTE: PostgreSQL parsed and planned it on every
-- call, ~0.5 ms of a ~4.5 ms search at 100k chunks
-- (tests/benchmarks/test_bench_snapshots.py). A PL/pgSQL statement with a fixed
-- text keeps its plan, and a plan is tied to the search_path it was made
-- under. So each snapshot now also gets a schema sitekb_snap_<id> holding one
-- view, chunks, over its table (snapshots.build creates both, retention drops
-- both), and the unfiltered vector search sets the search_path to that schema
-- and runs one fixed statement over "chunks". A session that keeps asking the
-- same alias plans once; when the alias moves, the search_path differs and
-- PostgreSQL plans again. Filtered, keyword and hybrid searches still go
-- through sitekb.search_table.
--
-- The plan is forced generic: with LIMIT a parameter, PostgreSQL would judge a
-- generic plan dearer than one planned for the actual k and plan every call.
-- The generic plan is the same HNSW index scan.
--
-- Only the owner can read these schemas; sitekb_reader gets no grant on them.
--
-- An unqualified name under a SECURITY DEFINER function must never reach the
-- caller's pg_temp: if a snapshot's schema is missing (retention dropped it a
-- moment ago, or a worker older than this migration built the snapshot), the
-- next schema on the path, sitekb_snap_gone, answers "chunks" with a view that
-- raises. The search then falls back to the general path, which names the
-- table in full.
--
-- The function is now VOLATILE: a STABLE one reads everything as of the
-- calling statement's start, so re-resolving the alias after retention dropped
-- a table found the same dropped snapshot again.

CREATE SCHEMA IF NOT EXISTS sitekb_snap_gone;

CREATE OR REPLACE FUNCTION sitekb.snapshot_view_missing()
RETURNS TABLE (chunk_id text, url text, title text, heading_path text[], content text, language text,
               tags text[], published text, embedding vector)
LANGUAGE plpgsql
AS $fn$
BEGIN
    RAISE EXCEPTION 'this snapshot has no view for the cached search' USING ERRCODE = 'SKB01';
END
$fn$;
REVOKE ALL ON FUNCTION sitekb.snapshot_view_missing() FROM PUBLIC;

CREATE OR REPLACE VIEW sitekb_snap_gone.chunks AS SELECT * FROM sitekb.snapshot_view_missing();

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


CREATE OR REPLACE FUNCTION sitekb_api.search(
    site             text,
    query            text    DEFAULT NULL,
    query_embedding  vector  DEFAULT NULL,
    k                integer DEFAULT 5,
    mode             text    DEFAULT 'vector',
    alias            text    DEFAULT 'production',
    snapshot_id      bigint  DEFAULT NULL,
    url_prefix       text    DEFAULT NULL,
    tags             text[]  DEFAULT NULL,
    language         text    DEFAULT NULL,
    published_after  date    DEFAULT NULL,
    published_before date    DEFAULT NULL
) RETURNS SETOF sitekb_api.passage
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET hnsw.ef_search = 100
SET hnsw.iterative_scan = 'off'
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_snap record;   -- a sitekb_api.resolved_snapshot (a record, so attributes added later fit)
    v_id   bigint;
    -- The function's own search_path (pg_catalog, the vector extension's schema, pg_temp).
    v_path text := current_setting('search_path');
    -- Vector mode, no filter, a list the default beam serves: the query runs right here.
    v_direct boolean := coalesce($5, 'vector') = 'vector' AND $3 IS NOT NULL AND coalesce($4, 5) BETWEEN 1 AND 50
                        AND coalesce($8, '') = '' AND coalesce(cardinality($9), 0) = 0 AND coalesce($10, '') = ''
                        AND $11 IS NULL AND $12 IS NULL;
BEGIN
    -- Positional parameters: the names above are for callers, and would clash with column names here.
    FOR attempt IN 1..3 LOOP
        IF $7 IS NOT NULL THEN
            v_snap := sitekb_api.resolve_snapshot($1, $6, $7);
        ELSE
            SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions
              INTO v_snap
              FROM sitekb.aliases a JOIN sitekb.snapshots s ON s.snapshot_id = a.snapshot_id
             WHERE a.site = $1 AND a.alias = coalesce($6, 'production') AND s.table_name IS NOT NULL;
            IF NOT FOUND THEN
                v_snap := sitekb_api.resolve_snapshot($1, $6, $7);  -- raises the explanatory error
            END IF;
        END IF;
        v_id := v_snap.snapshot_id;
        IF $3 IS NOT NULL AND vector_dims($3) <> v_snap.dimensions THEN
            RAISE EXCEPTION 'query_embedding has % dimensions; snapshot % was embedded with %:% (% dimensions)',
                vector_dims($3), v_id, v_snap.embedding_provider, v_snap.embedding_model,
                v_snap.dimensions
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'embed the question with the snapshot''s own model';
        END IF;
        BEGIN
            IF v_direct THEN
                -- "chunks" is the snapshot's view (or sitekb_snap_gone's, which raises SKB01); the
                -- function's SET clause restores the path on return.
                PERFORM set_config('search_path',
                                   format('pg_catalog, %I, sitekb_snap_gone, %s', 'sitekb_snap_' || v_id, v_path), true);
                -- Unfiltered, the index returns the hits in distance order: numbered as they come.
                RETURN QUERY
                    SELECT v_id, (row_number() OVER ())::integer, h.chunk_id, h.url, h.title, h.heading_path,
                           h.content, (1 - h.distance)::float8, h.language, h.tags, h.published
                    FROM (SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags,
                                 t.published, t.embedding <=> $3 AS distance
                          FROM chunks t ORDER BY t.embedding <=> $3 LIMIT coalesce($4, 5)) h;
            ELSE
                RETURN QUERY
                    SELECT v_id, r.rank, r.chunk_id, r.url, r.title, r.heading_path, r.content,
                           r.score, r.language, r.tags, r.published
                    FROM sitekb.search_table(v_snap.table_name, coalesce($5, 'vector'), $2, $3, coalesce($4, 5),
                                             $8, $9, $10, $11, $12) r;
            END IF;
            RETURN;
        EXCEPTION
        WHEN SQLSTATE 'SKB01' THEN
            -- No view for this snapshot: the general path reads its table by its full name.
            v_direct := false;
        WHEN undefined_table THEN
            -- Retention dropped the snapshot between resolving the alias and reading it: resolve again.
            IF attempt = 3 OR $7 IS NOT NULL THEN
                RAISE EXCEPTION 'snapshot % is no longer available', v_id
                    USING ERRCODE = 'no_data_found', HINT = 'it was retired; query an alias instead';
            END IF;
        END;
    END LOOP;
    -- Only reached when every attempt lost its table; never answer with silence.
    RAISE EXCEPTION 'snapshot % is no longer available', v_id
        USING ERRCODE = 'no_data_found', HINT = 'it was retired; query an alias instead';
END
$fn$;


-- CREATE OR REPLACE kept the grants; pin search_path again as 0005 did (pg_catalog plus
-- the vector extension's schema), since the SET clauses above replaced the old ones.
DO $do$
DECLARE
    v_ext_schema text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'vector');
BEGIN
    EXECUTE format('ALTER FUNCTION sitekb_api.search(text, text, vector, integer, text, text, bigint, text, text[], '
                   'text, date, date) SET search_path = pg_catalog, %I, pg_temp', v_ext_schema);
END
$do$;
