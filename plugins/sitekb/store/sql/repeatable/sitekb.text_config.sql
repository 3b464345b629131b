-- The text-search configuration of a language: its stemmer and stop words.
--
-- p_language is a language tag ('es', 'pt-BR'; sitekb.document_language), or
-- NULL when nothing is known, which reads as p_default (the site's first
-- language). A language Postgres ships a configuration for gets it (Spanish,
-- French, German, Portuguese, Italian, Dutch, the Nordic languages, Russian and
-- more); any other gets 'simple', which lower-cases words and stems nothing, so a
-- Japanese or Polish page is still found by its exact words. A configuration
-- missing from this server (an older Postgres has fewer) is 'simple' too.
--
-- The function is written here from this server's own configurations, as one CASE
-- over constants: it is inlined and costs nothing per chunk (a catalog lookup per
-- chunk would double the cost of the full-text vectors), and a server without, say,
-- 'armenian' (added in Postgres 16) maps it to 'simple'.
DO $do$
DECLARE
    v_languages text[][] := ARRAY[
        ['ar', 'arabic'], ['hy', 'armenian'], ['eu', 'basque'], ['ca', 'catalan'], ['da', 'danish'],
        ['nl', 'dutch'], ['en', 'english'], ['fi', 'finnish'], ['fr', 'french'], ['de', 'german'],
        ['el', 'greek'], ['hi', 'hindi'], ['hu', 'hungarian'], ['id', 'indonesian'], ['ga', 'irish'],
        ['it', 'italian'], ['lt', 'lithuanian'], ['ne', 'nepali'], ['no', 'norwegian'], ['nb', 'norwegian'],
        ['nn', 'norwegian'], ['pt', 'portuguese'], ['ro', 'romanian'], ['ru', 'russian'], ['sr', 'serbian'],
        ['es', 'spanish'], ['sv', 'swedish'], ['ta', 'tamil'], ['tr', 'turkish'], ['yi', 'yiddish']];
    v_cases text;
BEGIN
    SELECT string_agg(format('WHEN %L THEN %L::pg_catalog.regconfig', l.code, 'pg_catalog.' || l.name), ' ')
    INTO v_cases
    FROM (SELECT v_languages[i][1] AS code, v_languages[i][2] AS name
          FROM generate_subscripts(v_languages, 1) i) l
    WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace
                  WHERE n.nspname = 'pg_catalog' AND c.cfgname = l.name);
    EXECUTE format(
        $f$CREATE OR REPLACE FUNCTION sitekb.text_config(p_language text, p_default text DEFAULT 'en')
           RETURNS regconfig
           LANGUAGE sql IMMUTABLE PARALLEL SAFE
           RETURN CASE pg_catalog.split_part(pg_catalog.lower(coalesce(nullif(pg_catalog.btrim(p_language), ''),
                                                                       p_default, 'en')), '-', 1)
                  %s ELSE 'pg_catalog.simple'::pg_catalog.regconfig END$f$,
        v_cases);
END
$do$;

-- The language a document is indexed and filtered by: what the quality checks
-- measured (sitekb/quality/measures.py: a confident detection wins over the
-- page's declaration, since templates often hard-code lang="en"), keeping the
-- declared tag when it agrees ('en-GB' stays 'en-GB'), or the declared tag when
-- nothing was detected; NULL when neither is known.
CREATE OR REPLACE FUNCTION sitekb.document_language(p_declared text, p_measures jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
        WHEN nullif(p_measures ->> 'language', '') IS NULL THEN nullif(btrim(p_declared), '')
        WHEN split_part(lower(coalesce(p_declared, '')), '-', 1) = lower(p_measures ->> 'language')
            THEN btrim(p_declared)
        ELSE lower(p_measures ->> 'language') END
$fn$;
