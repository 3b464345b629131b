-- The BM25 term frequencies of a full-text vector: one row per lexeme, for a chunk
-- (sitekb.build_postings) and for a question (sitekb_api.search) alike.
--
-- A position counts by the field it came from (sitekb.fulltext_vector: title A
-- counts 2, heading path B 1.5, text C and a question's D 1), the field boost of
-- BM25F. The english parser keeps a dotted name whole ("os.path.join",
-- "functools.lru" of functools.lru_cache): that lexeme is rare and finds the page
-- that names it, and its parts ("os", "path", "join") are counted too, so a page
-- writing "lru_cache" or "path.join" still matches. Change the boosts or the split
-- and sitekb.build_postings's weights change: existing snapshots keep theirs until
-- rebuilt (tests/db/test_bm25.py holds SQL to a Python reference of this recipe).
--
-- Every build and refresh runs this once per chunk it indexes: a vector with no dotted
-- name (most chunks) takes the first branch, its lexemes as they are with no grouping;
-- a position's boost is counted from the weight array's A and B entries rather than
-- summed row by row (together half the time of the plain recipe).
CREATE OR REPLACE FUNCTION sitekb.bm25_terms(p_tsv tsvector)
RETURNS TABLE (lexeme text, tf real)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    WITH t AS MATERIALIZED (
        SELECT u.lexeme,
               greatest(1, cardinality(u.weights) + cardinality(array_positions(u.weights, 'A'))
                           + 0.5 * cardinality(array_positions(u.weights, 'B')))::real AS tf
        FROM unnest(p_tsv) u)
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
