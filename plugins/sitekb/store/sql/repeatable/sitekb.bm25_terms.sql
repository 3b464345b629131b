-- The BM25 term frequencies of a full-text vector: one row per lexeme, for a chunk
-- (sitekb.build_postings) and for a question (sitekb_api.search) alike.
--
-- Plain BM25 term counts: a lexeme's positions, whichever field they came from
-- (sitekb.fulltext_vector's title, heading path and text). Field boosts (title 2,
-- headings 1.5, recipe 1) lifted concept questions and cost exact and how-to ones more
-- on the pydocs dev set (MRR@10 0.528 with them, 0.539 without, a plain Python BM25
-- 0.533-0.534, tests/benchmarks/test_bench_keyword.py). A word joined by hyphens ("third-party", "built-in", "read-only") counts by
-- its parts alone, which the english parser emits too: the compound, rare, would
-- otherwise count as a third word and lift any page naming it. A compound with a
-- digit ("a1-b2") is a code and stays, with its parts ("SKU-1234" the parser reads as
-- "sku" and the number "-1234" anyway). The
-- english parser keeps a dotted name whole ("os.path.join", "functools.lru" of
-- functools.lru_cache): that lexeme is rare and finds the page that names it, and its
-- parts ("os", "path", "join") are counted too, so a page writing "lru_cache" or
-- "path.join" still matches. Change the recipe and bump sitekb.bm25_recipe: a
-- snapshot keeps the postings of the recipe it was built with, and a refresh builds
-- on a snapshot of the current recipe only (tests/db/test_bm25.py holds SQL to a
-- Python reference of this recipe).
--
-- Every build and refresh runs this once per chunk it indexes: a vector with no dotted
-- name (most chunks) takes the first branch, its lexemes as they are with no grouping.
CREATE OR REPLACE FUNCTION sitekb.bm25_terms(p_tsv tsvector)
RETURNS TABLE (lexeme text, tf real)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    WITH t AS MATERIALIZED (
        SELECT u.lexeme, greatest(1, cardinality(u.positions))::real AS tf
        FROM unnest(p_tsv) u
        WHERE u.lexeme !~ '^[[:alpha:]]+(-[[:alpha:]]+)+$')
    SELECT t.lexeme, t.tf FROM t
    WHERE array_to_string(tsvector_to_array(p_tsv), ' ') !~ '[[:alpha:]_]\.[[:alpha:]_]'
    UNION ALL
    SELECT x.lexeme, sum(x.tf)::real
    FROM (SELECT t.lexeme, t.tf FROM t
          UNION ALL
          SELECT p.part, t.tf
          FROM t CROSS JOIN LATERAL unnest(tsvector_to_array(to_tsvector('english'::regconfig,
                                                                          translate(t.lexeme, '.', ' ')))) p(part)
          WHERE t.lexeme ~ '[[:alpha:]_]\.[[:alpha:]_]' AND p.part <> t.lexeme) x
    WHERE array_to_string(tsvector_to_array(p_tsv), ' ') ~ '[[:alpha:]_]\.[[:alpha:]_]'
    GROUP BY x.lexeme
$fn$;

-- The recipe sitekb.bm25_terms follows today (recorded as sitekb.snapshots.bm25_recipe by
-- the build): 1 counted title words twice and headings' 1.5 times and kept hyphenated
-- compounds, 2 is plain counts, compounds by their parts.
CREATE OR REPLACE FUNCTION sitekb.bm25_recipe()
RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT 2::smallint $fn$;
