-- The cache key of a chunk's full-text vector (sitekb.fulltext_cache): text search
-- configuration, a version of the weighting recipe, title, heading path and text.
-- Change the version when sitekb.fulltext_vector changes, so old entries are not reused.
-- (An English chunk's key is the one sitekb made before configurations per language: the
-- configurations Postgres ships live in pg_catalog, so the name reads unqualified.)
CREATE OR REPLACE FUNCTION sitekb.fulltext_key(p_config regconfig, p_title text, p_heading_path text[], p_text text)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sha256(convert_to(
    p_config::text || '/1' || chr(31)
    || coalesce(p_title, '') || chr(31) || array_to_string(p_heading_path, chr(30)) || chr(31) || p_text, 'UTF8'));
