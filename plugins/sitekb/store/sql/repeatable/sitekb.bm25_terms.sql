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
CREATE OR REPLACE FUNCTION sitekb.bm25_terms(p_tsv tsvector)
RETURNS TABLE (lexeme text, tf real)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT x.lexeme, sum(t.tf)::real
    FROM (SELECT u.lexeme,
                 (SELECT greatest(1, coalesce(sum(CASE w WHEN 'A' THEN 2.0 WHEN 'B' THEN 1.5 ELSE 1.0 END), 0))
                  FROM unnest(u.weights) w) AS tf
          FROM unnest(p_tsv) u) t
    CROSS JOIN LATERAL (SELECT t.lexeme
                        UNION ALL
                        SELECT p.part
                        FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, translate(t.lexeme, '.', ' '))))
                             p(part)
                        WHERE t.lexeme ~ '[[:alpha:]_]\.[[:alpha:]_]' AND p.part <> t.lexeme) x(lexeme)
    GROUP BY x.lexeme
$fn$;
