-- Top-k passages for a question: the one query path.
--
-- Frontends call it over SQL; the HTTP API, the CLI and the quality gate's golden
-- questions call it too (sitekb/query.py), so what the gate tests is what
-- frontends get. The snapshot is a site's alias (default production) or a pinned
-- id, as sitekb.readable_snapshot allows (sitekb_api.resolve_snapshot explains a refusal). Modes: vector (needs
-- query_embedding, from the snapshot's own model), keyword (needs query) or
-- hybrid (needs both; the two lists fused, see below). Keyword ranking is
-- BM25 over the snapshot's postings (sitekb.build_postings: the segments' postings
-- weighted with the snapshot's own statistics; the question's lexemes by
-- sitekb.question_terms, the same recipe), reading each lexeme's 2,000 most important
-- postings; a snapshot whose statistics are missing ranks by cover density (ts_rank_cd)
-- until `sitekb db migrate` builds them. A snapshot's rows may sit in several segments
-- (sitekb.snapshot_views): the views "chunks" and "postings" hide that, and a top-k over
-- them is one index scan of the base's table, filtered to the snapshot's segments. The question is parsed with the text-search configuration
-- of query_language (or of the language filter) when the snapshot has pages in it,
-- else with each configuration the snapshot's chunks use (sitekb.text_config: an
-- English and a Spanish page each stem their own way; sitekb/query.py detects the
-- language of a question it is not told). Hybrid (the mode when none is named and
-- both the text and the embedding are given) ranks pages: each list's first 50
-- candidates are scored by both legs, a page takes its best similarity and its best
-- BM25 score, each standardised over that list's 20 best pages, and
-- vector_weight * vector + (1 - vector_weight) * keyword (0.85 by default) orders the
-- pages, a page's passages together (chosen by measurement on the pydocs dev set,
-- tests/benchmarks/test_bench_retrieval.py). per_page keeps at most that many passages of one page
-- (sitekb_api.search_pages groups them by page). Filters are
-- optional: url_prefix, tags (any of), language (en matches en-GB),
-- published_after / published_before (inclusive, documents with an ISO date only).
--
-- One fixed statement serves every mode and filter (the unfiltered vector search
-- has a shorter one of its own, for speed), so a session plans it once per
-- snapshot: it reads the unqualified view "chunks" of the snapshot's schema
-- (sitekb_snap_<id>, made by the build) under a search path set here, and a
-- cached plan is tied to the search path it was made under. The mode switches
-- the legs on and off through one-time filters. The plan is forced generic:
-- with LIMIT a parameter, PostgreSQL would otherwise judge a generic plan dearer
-- than a custom one and plan every call anyway; the generic plan is the same
-- HNSW (or GIN) index scan.
--
-- An answer comes entirely from one snapshot, even while an alias moves: the
-- alias is read once, then one snapshot's view. If retention drops that snapshot
-- in between, the alias is read again (up to three times).
CREATE OR REPLACE FUNCTION sitekb_api.search(
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
    per_page         integer DEFAULT NULL,
    query_language   text    DEFAULT NULL,
    vector_weight    float8  DEFAULT 0.85
) RETURNS SETOF sitekb_api.passage
-- VOLATILE: a STABLE function sees the database as of the calling statement's start,
-- so reading the alias again after retention dropped a snapshot would find the same one.
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
-- Only pg_catalog (and pg_temp last, which is never searched for functions or
-- operators): the vector extension often lives in schema public, where a role
-- allowed to create objects could define, say, public.cardinality(text[]), which
-- would be a closer match than pg_catalog's and run with the owner's rights. The
-- extension's operator and function are written schema-qualified instead.
SET search_path = pg_catalog, pg_temp
-- Recall@10 >= 0.95 at 100k chunks (tests/benchmarks/test_bench_snapshots.py). Every
-- setting is restored when the function returns, whatever it set inside.
SET hnsw.ef_search = 100
SET hnsw.iterative_scan = 'off'
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    -- Positional parameters below: the names above are for callers and would clash with columns.
    -- No mode: hybrid when both the text and the embedding are given (it measures best),
    -- else the one mode they allow.
    v_mode     text    := coalesce($5, CASE WHEN coalesce(btrim($2), '') = '' THEN 'vector'
                                        WHEN $3 IS NULL THEN 'keyword' ELSE 'hybrid' END);
    v_k        integer := coalesce($4, 5);
    v_per_page integer := $13;
    -- Hybrid fuses two candidate lists this deep; the other modes rank k directly. At most
    -- per_page passages of a page need more candidates, to still find k of them.
    v_depth    integer := CASE WHEN $13 IS NOT NULL THEN greatest(50, least(500, 10 * v_k))
                               WHEN v_mode = 'hybrid' THEN greatest(v_k, 50) ELSE v_k END;
    v_weight   float8  := coalesce($15, 0.85);
    v_configs  text[];
    v_prefer   text;
    v_prefix   text    := nullif($8, '');
    v_tags     text[]  := CASE WHEN cardinality($9) > 0 THEN $9 END;
    v_language text    := nullif(lower($10), '');
    v_after    text    := to_char($11, 'YYYY-MM-DD');
    v_before   text    := to_char($12, 'YYYY-MM-DD');
    v_unfiltered boolean := num_nonnulls(v_prefix, v_tags, v_language, v_after, v_before) = 0;
    v_tsquery  tsquery;
    v_terms    text[];
    v_bm25     boolean;
    v_snap     sitekb_api.resolved_snapshot;
    v_id       bigint;
    -- The function's own search path (pg_catalog, pg_temp).
    v_path     text    := current_setting('search_path');
BEGIN
    IF v_mode NOT IN ('vector', 'keyword', 'hybrid') THEN
        RAISE EXCEPTION 'unknown search mode %', v_mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use vector, keyword or hybrid';
    END IF;
    IF v_k < 1 OR v_k > 100 THEN
        RAISE EXCEPTION 'k must be between 1 and 100 (got %)', v_k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_per_page IS NOT NULL AND (v_per_page < 1 OR v_per_page > 100) THEN
        RAISE EXCEPTION 'per_page must be between 1 and 100 (got %)', v_per_page
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (v_weight BETWEEN 0 AND 1) THEN
        RAISE EXCEPTION 'vector_weight must be between 0 and 1 (got %)', v_weight
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '1 ranks by the vector leg alone, 0 by the keyword leg alone';
    END IF;
    IF v_mode IN ('vector', 'hybrid') AND $3 IS NULL THEN
        RAISE EXCEPTION '% search needs the query embedding', v_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'embed the question with the snapshot''s model (sitekb_api.snapshots shows it), '
                         'or use mode keyword';
    END IF;
    IF v_mode IN ('keyword', 'hybrid') AND coalesce(btrim($2), '') = '' THEN
        RAISE EXCEPTION '% search needs the query text', v_mode USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- A question matches chunks with any of its words (requiring all of them finds nothing
    -- for most questions), ranked by BM25 over its lexemes (sitekb.question_terms: the recipe
    -- of the postings). Its text is never read as operators: an "or", a quote or a leading
    -- dash in a natural question is a word or punctuation. The tsquery serves snapshots
    -- without postings.
    IF v_mode IN ('keyword', 'hybrid') THEN
        v_tsquery := replace(plainto_tsquery('english', $2)::text, ' & ', ' | ')::tsquery;
        IF coalesce(nullif($14, ''), v_language) IS NOT NULL THEN
            v_configs := ARRAY[sitekb.text_config(coalesce(nullif($14, ''), v_language))::text];
        END IF;
    END IF;
    IF v_mode <> 'keyword' AND v_depth > 50 THEN
        -- A deeper list needs a wider beam than the default 100 to stay accurate.
        PERFORM set_config('hnsw.ef_search', least(1000, 2 * v_depth)::text, true);
    END IF;
    IF NOT v_unfiltered THEN
        -- Iterative index scans keep a filtered vector search from coming back short; they
        -- cost ~50% more on an unfiltered one, so only here. relaxed_order may return rows
        -- slightly out of order: the statement sorts them again.
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;

    FOR attempt IN 1..3 LOOP
        v_snap := sitekb.readable_snapshot($1, $6, $7);
        IF v_snap.snapshot_id IS NULL THEN
            v_snap := sitekb_api.resolve_snapshot($1, $6, $7);  -- raises the explanation
        END IF;
        v_id := v_snap.snapshot_id;
        IF $3 IS NOT NULL AND @extschema:vector@.vector_dims($3) <> v_snap.dimensions THEN
            RAISE EXCEPTION 'query_embedding has % dimensions; snapshot % was embedded with %:% (% dimensions)',
                @extschema:vector@.vector_dims($3), v_id, v_snap.embedding_provider, v_snap.embedding_model, v_snap.dimensions
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'embed the question with the snapshot''s own model';
        END IF;
        -- "chunks" is the snapshot's view, or sitekb_snap_gone's, which raises SKB01; "postings"
        -- is the snapshot's, or for a snapshot that has none sitekb_snap_gone's, which is empty.
        v_bm25 := to_regclass(format('%I.%I', 'sitekb_snap_' || v_id, 'postings')) IS NOT NULL;
        IF v_mode <> 'vector' THEN
            -- The question's lexemes in the configuration asked for when the snapshot has pages
            -- in it, else in each of the snapshot's (one built before configurations per
            -- language is all English).
            v_terms := ARRAY(
                SELECT DISTINCT b.lexeme
                FROM (SELECT coalesce(s.text_configs, ARRAY['english']) AS own
                      FROM sitekb.snapshots s WHERE s.snapshot_id = v_id) snap
                CROSS JOIN LATERAL unnest(CASE WHEN v_configs <@ snap.own THEN v_configs ELSE snap.own END) cfg(name)
                CROSS JOIN LATERAL sitekb.question_terms(cfg.name::regconfig, $2) b(lexeme));
            -- A question in a language the snapshot has pages in prefers them: the stems of two
            -- languages overlap (Spanish "cancelación" stems to the English word "cancel"), and a
            -- site's translations of one page would otherwise tie. Other pages' keyword scores count
            -- half, so an exact term only another language's page has still finds it.
            v_prefer := CASE WHEN cardinality(v_configs) = 1 AND EXISTS (
                                  SELECT 1 FROM sitekb.snapshots s
                                  WHERE s.snapshot_id = v_id AND v_configs <@ coalesce(s.text_configs, ARRAY['english'])
                                    AND cardinality(coalesce(s.text_configs, ARRAY['english'])) > 1)
                             THEN v_configs[1] END;
        END IF;
        IF v_unfiltered AND v_mode <> 'keyword'
           AND (EXISTS (SELECT 1 FROM sitekb.tombstones g WHERE g.snapshot_id = v_id)
                OR EXISTS (SELECT 1 FROM sitekb.snapshot_segments ss JOIN sitekb.segments d ON d.stored_in = ss.segment_id
                           WHERE ss.snapshot_id = v_id AND NOT EXISTS (
                               SELECT 1 FROM sitekb.snapshot_segments x
                               WHERE x.snapshot_id = v_id AND x.segment_id = d.segment_id))) THEN
            -- The HNSW scan of the snapshot's base table skips rows the snapshot does not hold (its
            -- tombstones, the deltas of newer snapshots appended to the table): an iterative scan
            -- keeps it from coming back short, and in order (the fast statement below does not
            -- sort again).
            PERFORM set_config('hnsw.iterative_scan', 'strict_order', true);
        END IF;
        PERFORM set_config('search_path',
                           format('pg_catalog, %I, sitekb_snap_gone, %s', 'sitekb_snap_' || v_id, v_path), true);
        BEGIN
            IF v_mode = 'vector' AND v_unfiltered AND v_per_page IS NULL THEN
                -- The most common question, unfiltered vector search, also has a statement of
                -- its own: the general one below ranks the same rows (tested) but its fusion
                -- machinery costs ~0.25 ms a call, an eighth of an HNSW search at 100k chunks.
                -- Unfiltered and with iterative scans off, the index returns the rows in order.
                RETURN QUERY
                    SELECT v_id, (row_number() OVER ())::integer, n.chunk_id, n.url, n.title, n.heading_path,
                           n.content, (1 - n.distance)::float8, n.language, n.tags, n.published
                    FROM (SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags,
                                 t.published, t.embedding OPERATOR(@extschema:vector@.<=>) $3 AS distance
                          FROM chunks t ORDER BY t.embedding OPERATOR(@extschema:vector@.<=>) $3 LIMIT v_k) n;
                RETURN;
            END IF;
            RETURN QUERY
                WITH candidates AS NOT MATERIALIZED (
                         SELECT t.chunk_id, t.url, t.title, t.heading_path, t.content, t.language, t.tags,
                                t.published, t.embedding, t.tsv
                         FROM chunks t
                         -- "v_unfiltered OR": the generic plan cannot know which filters are
                         -- unset and judges five of them to leave a single row, which makes a
                         -- sequential scan look cheaper than the HNSW index; a flag that may be
                         -- true keeps the estimate at half the rows, and the index.
                         WHERE v_unfiltered
                            OR ((v_prefix IS NULL OR starts_with(t.url, v_prefix))
                                AND (v_tags IS NULL OR t.tags && v_tags)
                                AND (v_language IS NULL OR lower(t.language) = v_language
                                     OR starts_with(lower(t.language), v_language || '-'))
                                AND (v_after IS NULL
                                     OR (t.published ~ '^\d{4}-\d{2}-\d{2}' AND left(t.published, 10) >= v_after))
                                AND (v_before IS NULL
                                     OR (t.published ~ '^\d{4}-\d{2}-\d{2}' AND left(t.published, 10) <= v_before)))),
                     -- The nearest chunks by cosine distance (HNSW), numbered. Hybrid also scores
                     -- them by cover density on a snapshot without postings (cheap on these rows).
                     nearest AS MATERIALIZED (
                         SELECT x.*, row_number() OVER (ORDER BY x.distance, x.chunk_id) AS nth
                         FROM (SELECT c.chunk_id, c.url, c.title, c.heading_path, c.content, c.language, c.tags,
                                      c.published, c.embedding OPERATOR(@extschema:vector@.<=>) $3 AS distance,
                                      CASE WHEN v_mode = 'hybrid' AND NOT v_bm25
                                           THEN ts_rank_cd(c.tsv, v_tsquery)::float8 END AS rank_cd
                               FROM candidates c WHERE v_mode <> 'keyword'
                               ORDER BY c.embedding OPERATOR(@extschema:vector@.<=>) $3 LIMIT v_depth) x),
                     -- BM25: the sum of the question's lexemes' weights per chunk, from each lexeme's
                     -- most important postings (each segment's index on lexeme, impact, merged).
                     -- Unfiltered keyword search needs only the top v_depth; hybrid keeps every
                     -- scored chunk to score the vector leg's candidates by (the keyword list is its
                     -- top v_depth), and a filtered search sends them all to the filters (so a filter
                     -- finds the chunks that are among some question word's 2,000 most important).
                     scored AS MATERIALIZED (
                         SELECT p.chunk_id, sum(p.weight)::float8 AS relevance
                         FROM unnest(v_terms) q(lexeme)
                         CROSS JOIN LATERAL (SELECT x.chunk_id, x.weight FROM postings x WHERE x.lexeme = q.lexeme
                                             ORDER BY x.impact DESC, x.chunk_id LIMIT 2000) p
                         WHERE v_mode <> 'vector' AND v_bm25
                         GROUP BY p.chunk_id
                         ORDER BY CASE WHEN v_unfiltered AND v_mode = 'keyword' THEN sum(p.weight) END DESC,
                                  p.chunk_id
                         LIMIT CASE WHEN v_unfiltered AND v_mode = 'keyword' THEN v_depth END),
                     matching AS MATERIALIZED (
                         SELECT u.*, row_number() OVER (ORDER BY u.relevance DESC, u.chunk_id) AS nth
                         FROM (
                             SELECT c.chunk_id, c.url, c.title, c.heading_path, c.content, c.language, c.tags,
                                    c.published,
                                    s.relevance * CASE WHEN v_prefer IS NULL
                                                         OR sitekb.text_config(c.language)::text = v_prefer
                                                       THEN 1 ELSE 0.5 END AS relevance,
                                    CASE WHEN v_mode = 'hybrid'
                                         THEN c.embedding OPERATOR(@extschema:vector@.<=>) $3 END AS distance
                             FROM (SELECT * FROM scored ORDER BY relevance DESC, chunk_id
                                   LIMIT CASE WHEN v_unfiltered THEN v_depth END) s
                             JOIN candidates c ON c.chunk_id = s.chunk_id
                             UNION ALL
                             -- A snapshot without postings: full-text matches by cover density (GIN;
                             -- title A, headings B, text C), the ranking before BM25.
                             (SELECT c.chunk_id, c.url, c.title, c.heading_path, c.content, c.language, c.tags,
                                     c.published, ts_rank_cd(c.tsv, v_tsquery)::float8 AS relevance,
                                     CASE WHEN v_mode = 'hybrid'
                                          THEN c.embedding OPERATOR(@extschema:vector@.<=>) $3 END AS distance
                              FROM candidates c WHERE v_mode <> 'vector' AND NOT v_bm25 AND c.tsv @@ v_tsquery
                              ORDER BY relevance DESC, c.chunk_id LIMIT v_depth)
                             ORDER BY relevance DESC, chunk_id LIMIT v_depth) u),
                     -- Every candidate of either list, scored by both: a keyword candidate's cosine
                     -- similarity from its embedding, a vector candidate's BM25 from the scored
                     -- postings (0 when none of its words are among them). Hybrid fuses each list's
                     -- first 50 ("fusing"); deeper candidates (k or per_page asking for more) are
                     -- appended after them.
                     pool AS MATERIALIZED (
                         SELECT coalesce(n.chunk_id, m.chunk_id) AS chunk_id, coalesce(n.url, m.url) AS url,
                                coalesce(n.title, m.title) AS title,
                                coalesce(n.heading_path, m.heading_path) AS heading_path,
                                coalesce(n.content, m.content) AS content, coalesce(n.language, m.language) AS language,
                                coalesce(n.tags, m.tags) AS tags, coalesce(n.published, m.published) AS published,
                                1 - coalesce(n.distance, m.distance) AS similarity,
                                coalesce(m.relevance,
                                         CASE WHEN v_mode = 'hybrid' THEN coalesce(
                                             n.rank_cd,
                                             s.relevance
                                             * CASE WHEN v_prefer IS NULL
                                                      OR sitekb.text_config(n.language)::text = v_prefer
                                                    THEN 1 ELSE 0.5 END,
                                             0) END) AS relevance,
                                coalesce(n.nth <= 50, false) OR coalesce(m.nth <= 50, false) AS fusing
                         FROM nearest n FULL JOIN matching m ON m.chunk_id = n.chunk_id
                         LEFT JOIN (SELECT * FROM scored WHERE v_mode = 'hybrid') s ON s.chunk_id = n.chunk_id),
                     -- Hybrid ranks pages: a page's similarity is its most similar fusing passage's, its
                     -- keyword score its best BM25 passage's (often another passage of the same page),
                     -- each standardised over the 20 best pages of that list (z-scores: minus their
                     -- mean, over their standard deviation), then weighted:
                     -- vector_weight * similarity + (1 - vector_weight) * keyword.
                     page_legs AS MATERIALIZED (
                         SELECT p.url, max(p.similarity) AS similarity, max(p.relevance) AS relevance
                         FROM pool p WHERE v_mode = 'hybrid' AND p.fusing GROUP BY p.url),
                     spread AS (
                         SELECT v.mean AS v_mean, v.sd AS v_sd, w.mean AS k_mean, w.sd AS k_sd
                         FROM (SELECT avg(a.x) AS mean, stddev_pop(a.x) AS sd
                               FROM (SELECT l.similarity AS x FROM page_legs l
                                     ORDER BY l.similarity DESC LIMIT 20) a) v
                         CROSS JOIN (SELECT avg(a.x) AS mean, stddev_pop(a.x) AS sd
                                     FROM (SELECT l.relevance AS x FROM page_legs l
                                           ORDER BY l.relevance DESC LIMIT 20) a) w),
                     standardised AS (
                         SELECT p.*,
                                v_weight * CASE WHEN d.v_sd > 1e-9 THEN (p.similarity - d.v_mean) / d.v_sd ELSE 0 END
                                + (1 - v_weight) * CASE WHEN d.k_sd > 1e-9 THEN (p.relevance - d.k_mean) / d.k_sd
                                                        ELSE 0 END AS page_score,
                                d.*
                         FROM page_legs p CROSS JOIN spread d),
                     fused AS (
                         SELECT p.chunk_id, p.url, p.title, p.heading_path, p.content, p.language, p.tags, p.published,
                                CASE v_mode
                                    WHEN 'vector' THEN p.similarity
                                    WHEN 'keyword' THEN p.relevance
                                    WHEN 'hybrid' THEN CASE
                                        WHEN p.fusing THEN g.page_score
                                        -- A deeper candidate: after every fused page, by similarity.
                                        ELSE (SELECT min(x.page_score) FROM standardised x) - 2 + p.similarity
                                    END
                                END AS score,
                                -- Hybrid keeps a page's passages together (the page's score), its own best
                                -- first: the same z-scores for the passage itself. Equal scores otherwise
                                -- fall back on the vector leg.
                                CASE WHEN v_mode = 'hybrid' AND p.fusing THEN p.url END AS page,
                                CASE WHEN v_mode = 'hybrid' AND p.fusing
                                     THEN v_weight * CASE WHEN g.v_sd > 1e-9 THEN (p.similarity - g.v_mean) / g.v_sd
                                                          ELSE 0 END
                                          + (1 - v_weight) * CASE WHEN g.k_sd > 1e-9
                                                                  THEN (p.relevance - g.k_mean) / g.k_sd ELSE 0 END
                                     ELSE coalesce(p.similarity, -2) END AS tiebreak
                         FROM pool p LEFT JOIN standardised g ON g.url = p.url AND p.fusing),
                     -- At most per_page passages of a page, its best ones.
                     ranked AS (
                         SELECT f.*, row_number() OVER (PARTITION BY f.url ORDER BY f.score DESC, f.page, f.tiebreak DESC,
                                                                                    f.chunk_id) AS nth
                         FROM fused f)
                SELECT v_id, (row_number() OVER (ORDER BY r.score DESC, r.page, r.tiebreak DESC, r.chunk_id))::integer,
                       r.chunk_id, r.url,
                       r.title, r.heading_path, r.content, r.score, r.language, r.tags, r.published
                FROM ranked r
                WHERE v_per_page IS NULL OR r.nth <= v_per_page
                ORDER BY r.score DESC, r.page, r.tiebreak DESC, r.chunk_id LIMIT v_k;
            RETURN;
        EXCEPTION
            WHEN SQLSTATE 'SKB01' OR undefined_table THEN
                -- Retention dropped the snapshot between reading the alias and reading it:
                -- read the alias again. A snapshot whose table stays but whose view is
                -- missing is a repair for `sitekb db migrate` (sitekb.ensure_search_views).
                IF to_regclass(format('%I.%I', 'sitekb_snapshots', v_snap.table_name)) IS NOT NULL THEN
                    RAISE EXCEPTION 'snapshot % has no search view', v_id
                        USING ERRCODE = 'no_data_found',
                              HINT = 'it was built by an older sitekb, or its view was dropped: '
                                     'run `sitekb db migrate` to give it one';
                END IF;
                IF attempt = 3 OR $7 IS NOT NULL THEN
                    RAISE EXCEPTION 'snapshot % is no longer available', v_id
                        USING ERRCODE = 'no_data_found', HINT = 'it was retired; query an alias instead';
                END IF;
        END;
    END LOOP;
END
$fn$;
