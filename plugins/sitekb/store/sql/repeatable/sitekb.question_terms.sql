-- The BM25 lexemes of a question in one text-search configuration.
--
-- Postgres's stop word lists hold the plain forms of the words that accents turn
-- into questions: Spanish "como", "que", "donde" are stop words, the interrogatives
-- "cómo", "qué", "dónde" are not, and a question starts with one. Their stems ("com")
-- would then weigh in like rare words. So a word of the question is dropped when it
-- is a stop word once its vowels lose their accents: the question is parsed as
-- written (its words stem as the pages' do) and again without accents, and a word
-- present in the first parse but absent from the second (same positions) was a stop
-- word. The dotted-name split is sitekb.bm25_terms's, as for the postings.
CREATE OR REPLACE FUNCTION sitekb.question_terms(p_config regconfig, p_question text)
RETURNS SETOF text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    WITH written AS (SELECT u.lexeme, u.positions FROM unnest(to_tsvector(p_config, p_question)) u),
         plain AS (
             SELECT DISTINCT p.position
             FROM unnest(to_tsvector(p_config, translate(p_question,
                         'áéíóúàèìòùâêîôûäëïöüÁÉÍÓÚÀÈÌÒÙÂÊÎÔÛÄËÏÖÜ',
                         'aeiouaeiouaeiouaeiouAEIOUAEIOUAEIOUAEIOU'))) u
             CROSS JOIN LATERAL unnest(u.positions) p(position))
    SELECT b.lexeme
    FROM sitekb.bm25_terms(array_to_tsvector(ARRAY(
             SELECT w.lexeme FROM written w
             WHERE EXISTS (SELECT 1 FROM unnest(w.positions) wp(position)
                           WHERE wp.position IN (SELECT position FROM plain))))) b
$fn$;
