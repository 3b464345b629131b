-- The query API for bot frontends: schema sitekb_api and the role sitekb_reader.
--
-- A frontend connects as sitekb_reader (a LOGIN role without a password: the
-- operator sets one with ALTER ROLE sitekb_reader PASSWORD '...') and may use
-- only this schema. Everything here reads through SECURITY DEFINER functions
-- and owner-privileged views with a fixed search_path, and only ever sees
-- snapshots that are or were published (never building, validated-only or
-- rejected ones, never raw pages, documents or the quarantine) and cannot
-- write anything.
--
-- Snapshot tables are created at run time (sitekb_snapshots.snap_<id>), so the
-- search functions build their query with format('%I') over the table name
-- resolved from sitekb.snapshots; every value travels as a bound parameter.
-- A search reads the alias once and then one table, so an answer always comes
-- entirely from one snapshot even while an alias moves.

CREATE SCHEMA IF NOT EXISTS sitekb_api;

-- What a search returns, one row per passage.
CREATE TYPE sitekb_api.passage AS (
    snapshot_id   bigint,
    rank          integer,
    chunk_id      text,
    url           text,
    title         text,
    heading_path  text[],
    content       text,
    score         double precision,
    language      text,
    tags          text[],
    published     text
);

-- The snapshot a frontend may read: what the alias points to, or a pinned id
-- that is (or was) published and still has its table.
CREATE TYPE sitekb_api.resolved_snapshot AS (
    snapshot_id         bigint,
    site                text,
    table_name          text,
    embedding_provider  text,
    embedding_model     text,
    dimensions          integer
);


-- Internal: one search over one snapshot table, whatever its state. The
-- golden-question gate uses it on a validated snapshot before publishing, so
-- it is not granted to the reader (who also has no USAGE on schema sitekb).
CREATE FUNCTION sitekb.search_table(
    p_table            text,
    p_mode             text,
    p_query            text,
    p_embedding        vector,
    p_k                integer,
    p_url_prefix       text    DEFAULT NULL,
    p_tags             text[]  DEFAULT NULL,
    p_language         text    DEFAULT NULL,
    p_published_after  date    DEFAULT NULL,
    p_published_before date    DEFAULT NULL,
    p_candidates       integer DEFAULT 50
) RETURNS TABLE (
    rank integer, chunk_id text, url text, title text, heading_path text[], content text,
    score double precision, language text, tags text[], published text
)
LANGUAGE plpgsql STABLE
-- Recall@10 >= 0.95 at 100k chunks (tests/benchmarks/test_bench_snapshots.py). Both
-- settings are restored when the function returns, whatever it set inside.
SET hnsw.ef_search = 100
SET hnsw.iterative_scan = 'off'
AS $fn$
DECLARE
    v_table   text := format('%I.%I', 'sitekb_snapshots', p_table);
    v_filter  text := '';
    v_vector  text;  -- nearest chunks; :limit is the LIMIT parameter ($3 = k, $9 = candidate depth)
    v_keyword text;
    v_tsquery tsquery;
    v_depth   integer := greatest(p_k, coalesce(p_candidates, 50));
BEGIN
    IF p_mode NOT IN ('vector', 'keyword', 'hybrid') THEN
        RAISE EXCEPTION 'unknown search mode %', p_mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use vector, keyword or hybrid';
    END IF;
    IF p_k IS NULL OR p_k < 1 OR p_k > 100 THEN
        RAISE EXCEPTION 'k must be between 1 and 100 (got %)', p_k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_mode IN ('vector', 'hybrid') AND p_embedding IS NULL THEN
        RAISE EXCEPTION '% search needs the query embedding', p_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'embed the question with the snapshot''s model (sitekb_api.snapshots shows it), '
                         'or use mode keyword';
    END IF;
    IF p_mode IN ('keyword', 'hybrid') AND coalesce(btrim(p_query), '') = '' THEN
        RAISE EXCEPTION '% search needs the query text', p_mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_depth > 40 THEN
        -- A deeper candidate list needs a wider beam to stay accurate (reverted when the function returns).
        PERFORM set_config('hnsw.ef_search', least(1000, v_depth * 2)::text, true);
    END IF;

    -- A question in plain words matches chunks with any of its words, best covered first
    -- (requiring all of them finds nothing for most questions); quotes, "or" and -word
    -- switch to web-search syntax for people who write queries.
    IF p_mode IN ('keyword', 'hybrid') THEN
        v_tsquery := CASE WHEN p_query ~* '"|(^|\s)-\w|\mor\M' THEN websearch_to_tsquery('english', p_query)
                          ELSE replace(plainto_tsquery('english', p_query)::text, ' & ', ' | ')::tsquery END;
    END IF;

    -- Optional filters; each refers to a bound parameter ($4..$8), never to a spliced value.
    IF p_url_prefix IS NOT NULL AND p_url_prefix <> '' THEN
        v_filter := v_filter || ' AND starts_with(t.url, $4)';
    END IF;
    IF p_tags IS NOT NULL AND cardinality(p_tags) > 0 THEN
        v_filter := v_filter || ' AND t.tags && $5';
    END IF;
    IF p_language IS NOT NULL AND p_language <> '' THEN
        v_filter := v_filter || ' AND (lower(t.language) = lower($6) OR starts_with(lower(t.language), lower($6) || ''-''))';
    END IF;
    IF p_published_after IS NOT NULL THEN
        v_filter := v_filter || ' AND t.published ~ ''^\d{4}-\d{2}-\d{2}'' AND left(t.published, 10) >= to_char($7, ''YYYY-MM-DD'')';
    END IF;
    IF p_published_before IS NOT NULL THEN
        v_filter := v_filter || ' AND t.published ~ ''^\d{4}-\d{2}-\d{2}'' AND left(t.published, 10) <= to_char($8, ''YYYY-MM-DD'')';
    END IF;

    IF v_filter <> '' THEN
        -- Iterative index scans keep a filtered vector search from coming back short; they
        -- cost ~50% more on an unfiltered one, so only here. relaxed_order may return rows
        -- slightly out of order: the queries below sort again.
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;

    -- The nearest chunks by cosine distance (HNSW).
    v_vector := format(
        'SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags, t.published,
                t.embedding <=> $1 AS distance
         FROM %s t WHERE true %s ORDER BY t.embedding <=> $1 LIMIT :limit', v_table, v_filter);
    -- Full-text matches ranked by cover density (GIN over the weighted tsvector: title A, headings B, text C).
    v_keyword := format(
        'SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags, t.published,
                ts_rank_cd(t.tsv, $10)::float8 AS relevance
         FROM %s t
         WHERE t.tsv @@ $10 %s ORDER BY relevance DESC, t.chunk_id LIMIT :limit', v_table, v_filter);

    IF p_mode = 'vector' THEN
        RETURN QUERY EXECUTE format(
            'WITH hits AS MATERIALIZED (%s)
             SELECT (row_number() OVER (ORDER BY h.distance, h.chunk_id))::integer, h.chunk_id, h.url, h.title,
                    h.heading_path, h.content, (1 - h.distance)::float8, h.language, h.tags, h.published
             FROM hits h ORDER BY 1', replace(v_vector, ':limit', '$3'))
        USING p_embedding, p_query, p_k, p_url_prefix, p_tags, p_language, p_published_after,
              p_published_before, v_depth, v_tsquery;
    ELSIF p_mode = 'keyword' THEN
        RETURN QUERY EXECUTE format(
            'SELECT (row_number() OVER (ORDER BY h.relevance DESC, h.chunk_id))::integer, h.chunk_id, h.url,
                    h.title, h.heading_path, h.content, h.relevance, h.language, h.tags, h.published
             FROM (%s) h ORDER BY 1', replace(v_keyword, ':limit', '$3'))
        USING p_embedding, p_query, p_k, p_url_prefix, p_tags, p_language, p_published_after,
              p_published_before, v_depth, v_tsquery;
    ELSE
        -- Reciprocal rank fusion (k = 60, Cormack et al.) of both candidate lists.
        RETURN QUERY EXECUTE format(
            'WITH v AS MATERIALIZED (%s),
                  vr AS (SELECT v.*, row_number() OVER (ORDER BY v.distance, v.chunk_id) AS r FROM v),
                  kw AS MATERIALIZED (%s),
                  kr AS (SELECT kw.*, row_number() OVER (ORDER BY kw.relevance DESC, kw.chunk_id) AS r FROM kw),
                  fused AS (
                      SELECT coalesce(vr.chunk_id, kr.chunk_id) AS chunk_id,
                             coalesce(1.0 / (60 + vr.r), 0)::float8 + coalesce(1.0 / (60 + kr.r), 0)::float8 AS rrf,
                             coalesce(vr.url, kr.url) AS url, coalesce(vr.title, kr.title) AS title,
                             coalesce(vr.heading_path, kr.heading_path) AS heading_path,
                             coalesce(vr.content, kr.content) AS content,
                             coalesce(vr.language, kr.language) AS language, coalesce(vr.tags, kr.tags) AS tags,
                             coalesce(vr.published, kr.published) AS published
                      FROM vr FULL JOIN kr ON kr.chunk_id = vr.chunk_id)
             SELECT (row_number() OVER (ORDER BY f.rrf DESC, f.chunk_id))::integer, f.chunk_id, f.url, f.title,
                    f.heading_path, f.content, f.rrf, f.language, f.tags, f.published
             FROM fused f ORDER BY f.rrf DESC, f.chunk_id LIMIT $3', replace(v_vector, ':limit', '$9'), replace(v_keyword, ':limit', '$9'))
        USING p_embedding, p_query, p_k, p_url_prefix, p_tags, p_language, p_published_after,
              p_published_before, v_depth, v_tsquery;
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION sitekb.search_table(text, text, text, vector, integer, text, text[], text, date, date, integer)
    FROM PUBLIC;


-- Which snapshot a frontend's request reads. Raises no_data_found (P0002)
-- with a message that says what to do when there is none.
CREATE FUNCTION sitekb_api.resolve_snapshot(site text, alias text DEFAULT 'production', snapshot_id bigint DEFAULT NULL)
RETURNS sitekb_api.resolved_snapshot
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_result sitekb_api.resolved_snapshot;
BEGIN
    IF $3 IS NOT NULL THEN
        SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions
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
    SELECT s.snapshot_id, s.site, s.table_name, s.embedding_provider, s.embedding_model, s.dimensions
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


-- Top-k passages for a question from a site's alias (default production) or a
-- pinned snapshot id. mode: vector (needs query_embedding), keyword (needs
-- query) or hybrid (needs both; reciprocal rank fusion). Filters are optional:
-- url_prefix, tags (any of), language (en matches en-GB), published_after /
-- published_before (inclusive, documents with an ISO date only).
CREATE FUNCTION sitekb_api.search(
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
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_snap sitekb_api.resolved_snapshot;
BEGIN
    -- Positional parameters: the names above are for callers, and would clash with column names here.
    v_snap := sitekb_api.resolve_snapshot($1, $6, $7);
    IF $3 IS NOT NULL AND vector_dims($3) <> v_snap.dimensions THEN
        RAISE EXCEPTION 'query_embedding has % dimensions; snapshot % was embedded with %:% (% dimensions)',
            vector_dims($3), v_snap.snapshot_id, v_snap.embedding_provider, v_snap.embedding_model, v_snap.dimensions
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'embed the question with the snapshot''s own model';
    END IF;
    FOR attempt IN 1..3 LOOP
        BEGIN
            RETURN QUERY
                SELECT v_snap.snapshot_id, r.rank, r.chunk_id, r.url, r.title, r.heading_path, r.content, r.score,
                       r.language, r.tags, r.published
                FROM sitekb.search_table(v_snap.table_name, coalesce($5, 'vector'), $2, $3, coalesce($4, 5),
                                         $8, $9, $10, $11, $12) r;
            RETURN;
        EXCEPTION WHEN undefined_table THEN
            -- Retention dropped the table between resolving the alias and reading it: resolve again.
            IF attempt = 3 OR $7 IS NOT NULL THEN
                RAISE EXCEPTION 'snapshot % is no longer available', v_snap.snapshot_id
                    USING ERRCODE = 'no_data_found', HINT = 'it was retired; query an alias instead';
            END IF;
            v_snap := sitekb_api.resolve_snapshot($1, $6, $7);
        END;
    END LOOP;
END
$fn$;


-- Snapshots a frontend may query, with their aliases and embedding model.
CREATE VIEW sitekb_api.snapshots AS
SELECT s.snapshot_id, s.site, s.state,
       coalesce(array_agg(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), '{}') AS aliases,
       s.embedding_provider, s.embedding_model, s.dimensions,
       (s.counts ->> 'chunks')::integer AS chunks, (s.counts ->> 'documents')::integer AS documents,
       s.config_hash, s.extractor_version, s.chunker_version, s.pinned, s.created_at, s.built_at
FROM sitekb.snapshots s LEFT JOIN sitekb.aliases a ON a.snapshot_id = s.snapshot_id
WHERE s.table_name IS NOT NULL AND s.state IN ('published', 'retired')
GROUP BY s.snapshot_id;

-- Where each alias of each site points now.
CREATE VIEW sitekb_api.aliases AS
SELECT a.site, a.alias, a.snapshot_id, a.updated_at FROM sitekb.aliases a;

-- The schema version this database is migrated to (readiness checks).
CREATE FUNCTION sitekb_api.schema_version() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT max(version) FROM public.sitekb_schema_migrations $fn$;


-- Pin every function's search_path to pg_catalog plus the schema the vector
-- extension lives in (public by default, but not necessarily), so a reader
-- cannot shadow an operator or function with one of its own.
DO $do$
DECLARE
    v_ext_schema text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'vector');
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'sitekb_api' OR (n.nspname = 'sitekb' AND p.proname = 'search_table')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', v_fn, v_ext_schema);
    END LOOP;
END
$do$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sitekb_api FROM PUBLIC;
REVOKE ALL ON SCHEMA sitekb_api FROM PUBLIC;

-- The read-only role. Roles are cluster-wide: created once, granted per database.
DO $do$
DECLARE
    v_ext_schema text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'vector');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitekb_reader') THEN
        BEGIN
            -- LOGIN without a password: nobody can log in until the operator sets one.
            CREATE ROLE sitekb_reader LOGIN NOINHERIT NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'sitekb: cannot create role sitekb_reader (needs CREATEROLE). Ask a DBA to run '
                          '"CREATE ROLE sitekb_reader LOGIN" and then the GRANTs at the end of 0005_query_api.sql';
            RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA sitekb_api TO sitekb_reader;
    GRANT SELECT ON sitekb_api.snapshots, sitekb_api.aliases TO sitekb_reader;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sitekb_api TO sitekb_reader;
    -- The vector type is needed to pass a query embedding.
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO sitekb_reader', v_ext_schema);
END
$do$;
