-- A leaner path for the most common query: top-k by vector, no filters.
--
-- Same signatures and results as 0005; what changes is the work per call. At
-- 100k chunks a vector search through sitekb_api.search cost 1.3x a bare HNSW
-- query; most of the difference was PL/pgSQL layers, not the search itself
-- (tests/benchmarks/test_bench_snapshots.py measures it):
--   * sitekb_api.search resolves the alias with one inline query and runs an
--     unfiltered vector search itself, instead of calling resolve_snapshot and
--     search_table (two more PL/pgSQL calls, one more tuple store);
--   * unfiltered, the nearest chunks are numbered in index order: no
--     materialised CTE, no re-sort. A filter makes the scan relaxed_order, and
--     then the materialised CTE still forces a real sort;
--   * only the query of the requested mode is built, and the HNSW beam is only
--     widened when a list is deeper than the default ef_search (100) serves.

-- The ranked nearest-chunks query over one snapshot table (shared by both
-- functions below so they cannot drift apart). $1 is the query embedding,
-- p_limit the parameter holding the depth, p_filter extra AND conditions on
-- bound parameters, p_lead columns put first (the API's snapshot id). Returns
-- [lead,] rank, chunk_id, url, title, heading_path, content, score, language,
-- tags, published, best first. It only formats text (no SET clause, so
-- PL/pgSQL can inline it); the callers pin their search_path.
CREATE FUNCTION sitekb.nearest_sql(p_table text, p_filter text, p_limit text, p_lead text DEFAULT '')
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN format(
    -- Unfiltered, the index returns the hits in distance order; they are numbered and
    -- returned as they come, with no sort (ties keep the index's order). Filtered, the
    -- scan is relaxed_order: the materialised CTE hides that order from the planner,
    -- so the window and the final ORDER BY really sort.
    CASE WHEN p_filter = ''
         THEN 'SELECT %2$s(row_number() OVER ())::integer AS rank,'
         ELSE 'WITH hits AS MATERIALIZED (%1$s) SELECT %2$s(row_number() OVER (ORDER BY h.distance, h.chunk_id))::integer AS rank,'
    END ||
    ' h.chunk_id, h.url, h.title, h.heading_path, h.content, (1 - h.distance)::float8 AS score,
      h.language, h.tags, h.published FROM ' ||
    CASE WHEN p_filter = '' THEN '(%1$s) h' ELSE 'hits h ORDER BY rank' END,
    format('SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags, t.published,
                   t.embedding <=> $1 AS distance
            FROM %I.%I t WHERE true %s ORDER BY t.embedding <=> $1 LIMIT %s',
           'sitekb_snapshots', p_table, p_filter, p_limit),
    p_lead);

REVOKE ALL ON FUNCTION sitekb.nearest_sql(text, text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sitekb.search_table(
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
    v_vector  text;  -- hybrid: the nearest candidates ($9 = candidate depth)
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
    IF p_mode <> 'keyword' AND (CASE p_mode WHEN 'vector' THEN p_k ELSE v_depth END) > 50 THEN
        -- A deeper list needs a wider beam than the default 100 to stay accurate (reverted
        -- when the function returns).
        PERFORM set_config('hnsw.ef_search',
                           least(1000, 2 * CASE p_mode WHEN 'vector' THEN p_k ELSE v_depth END)::text, true);
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
    IF p_mode = 'hybrid' THEN
        v_vector := format(
            'SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags, t.published,
                    t.embedding <=> $1 AS distance
             FROM %s t WHERE true %s ORDER BY t.embedding <=> $1 LIMIT $9', v_table, v_filter);
    END IF;
    -- Full-text matches ranked by cover density (GIN over the weighted tsvector: title A, headings B, text C).
    IF p_mode IN ('keyword', 'hybrid') THEN
        v_keyword := format(
            'SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags, t.published,
                    ts_rank_cd(t.tsv, $10)::float8 AS relevance
             FROM %s t
             WHERE t.tsv @@ $10 %s ORDER BY relevance DESC, t.chunk_id LIMIT %s', v_table, v_filter,
            CASE p_mode WHEN 'keyword' THEN '$3' ELSE '$9' END);
    END IF;

    IF p_mode = 'vector' THEN
        RETURN QUERY EXECUTE sitekb.nearest_sql(p_table, v_filter, '$3')
        USING p_embedding, p_query, p_k, p_url_prefix, p_tags, p_language, p_published_after,
              p_published_before, v_depth, v_tsquery;
    ELSIF p_mode = 'keyword' THEN
        RETURN QUERY EXECUTE format(
            'SELECT (row_number() OVER (ORDER BY h.relevance DESC, h.chunk_id))::integer, h.chunk_id, h.url,
                    h.title, h.heading_path, h.content, h.relevance, h.language, h.tags, h.published
             FROM (%s) h ORDER BY 1', v_keyword)
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
             FROM fused f ORDER BY f.rrf DESC, f.chunk_id LIMIT $3', v_vector, v_keyword)
        USING p_embedding, p_query, p_k, p_url_prefix, p_tags, p_language, p_published_after,
              p_published_before, v_depth, v_tsquery;
    END IF;
END
$fn$;


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
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET hnsw.ef_search = 100
SET hnsw.iterative_scan = 'off'
AS $fn$
DECLARE
    v_snap record;   -- a sitekb_api.resolved_snapshot (a record, so attributes added later fit)
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
        IF $3 IS NOT NULL AND vector_dims($3) <> v_snap.dimensions THEN
            RAISE EXCEPTION 'query_embedding has % dimensions; snapshot % was embedded with %:% (% dimensions)',
                vector_dims($3), v_snap.snapshot_id, v_snap.embedding_provider, v_snap.embedding_model,
                v_snap.dimensions
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'embed the question with the snapshot''s own model';
        END IF;
        BEGIN
            IF v_direct THEN
                RETURN QUERY EXECUTE sitekb.nearest_sql(v_snap.table_name, '', '$3', '$2::bigint, ')
                    USING $3, v_snap.snapshot_id, coalesce($4, 5);
            ELSE
                RETURN QUERY
                    SELECT v_snap.snapshot_id, r.rank, r.chunk_id, r.url, r.title, r.heading_path, r.content,
                           r.score, r.language, r.tags, r.published
                    FROM sitekb.search_table(v_snap.table_name, coalesce($5, 'vector'), $2, $3, coalesce($4, 5),
                                             $8, $9, $10, $11, $12) r;
            END IF;
            RETURN;
        EXCEPTION WHEN undefined_table THEN
            -- Retention dropped the table between resolving the alias and reading it: resolve again.
            IF attempt = 3 OR $7 IS NOT NULL THEN
                RAISE EXCEPTION 'snapshot % is no longer available', v_snap.snapshot_id
                    USING ERRCODE = 'no_data_found', HINT = 'it was retired; query an alias instead';
            END IF;
        END;
    END LOOP;
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
    EXECUTE format('ALTER FUNCTION sitekb.search_table(text, text, text, vector, integer, text, text[], text, date, '
                   'date, integer) SET search_path = pg_catalog, %I, pg_temp', v_ext_schema);
END
$do$;
