-- The best pages for a question, each with its best passages: what a frontend cites.
--
-- The same ranking as sitekb_api.search (same modes, filters, snapshot and
-- parameters), grouped by page: a page ranks by its best passage, and brings up to
-- `passages` of its passages (best first) as a JSON array of {chunk_id,
-- heading_path, content, score}. It asks sitekb_api.search for k * passages
-- passages with at most `passages` per page, which holds at least k pages whenever
-- the snapshot has them, and every page ranked above the last of them: the top k
-- pages by best passage are exactly the top k of that list. k is at most 20 pages
-- and passages at most 5, so one call reads at most 100 passages.
CREATE OR REPLACE FUNCTION sitekb_api.search_pages(
    site             text,
    query            text    DEFAULT NULL,
    query_embedding  vector  DEFAULT NULL,
    k                integer DEFAULT 5,
    mode             text    DEFAULT NULL,
    alias            text    DEFAULT 'production',
    snapshot_id      bigint  DEFAULT NULL,
    url_prefix       text    DEFAULT NULL,
    tags             text[]  DEFAULT NULL,
    language         text    DEFAULT NULL,
    published_after  date    DEFAULT NULL,
    published_before date    DEFAULT NULL,
    passages         integer DEFAULT 3,
    query_language   text    DEFAULT NULL,
    vector_weight    float8  DEFAULT 0.85
) RETURNS SETOF sitekb_api.page
-- VOLATILE like sitekb_api.search (it reads an alias again after retention moved it).
-- Definer's rights and a fixed search path like every function of sitekb_api, though
-- everything it reads it reads through sitekb_api.search.
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_k        integer := coalesce($4, 5);
    v_passages integer := coalesce($13, 3);
BEGIN
    IF v_k < 1 OR v_k > 20 THEN
        RAISE EXCEPTION 'k must be between 1 and 20 pages (got %)', v_k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_passages < 1 OR v_passages > 5 THEN
        RAISE EXCEPTION 'passages must be between 1 and 5 a page (got %)', v_passages
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
        WITH hits AS MATERIALIZED (
                 SELECT * FROM sitekb_api.search($1, $2, $3, v_k * v_passages, $5, $6, $7, $8, $9, $10, $11, $12,
                                                 v_passages, $14, $15)),
             pages AS (
                 SELECT h.url, max(h.snapshot_id) AS snapshot_id, max(h.score) AS score, min(h.rank) AS best_rank,
                        jsonb_agg(jsonb_build_object('chunk_id', h.chunk_id, 'heading_path', to_jsonb(h.heading_path),
                                                     'content', h.content, 'score', h.score) ORDER BY h.rank) AS passages
                 FROM hits h GROUP BY h.url)
        SELECT p.snapshot_id, (row_number() OVER (ORDER BY p.best_rank))::integer, p.url, b.title, p.score,
               b.language, b.tags, b.published, p.passages
        FROM pages p
        -- The page's fields from its best passage (every passage of a page carries the same).
        JOIN hits b ON b.url = p.url AND b.rank = p.best_rank
        ORDER BY p.best_rank
        LIMIT v_k;
END
$fn$;
