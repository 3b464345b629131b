-- Full-text vectors of chunks, computed once per distinct content.
--
-- Keyword search reads a weighted tsvector per chunk: title (A), heading path
-- (B), text (C). Parsing and stemming every word costs several times more than
-- copying the chunk, so, like embeddings, the vector is cached by what it is
-- made of: a run whose pages barely changed computes almost none, and building
-- a snapshot only copies them (sitekb/fulltext.py, sitekb/snapshots.py).

-- The cache key: text search configuration, a version of the weighting
-- scheme, title, heading path and text. Change the version when the vector's
-- recipe below changes, so old entries are not reused.
CREATE FUNCTION sitekb.fulltext_key(p_title text, p_heading_path text[], p_text text)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sha256(convert_to(
    'english/1' || chr(31) || coalesce(p_title, '') || chr(31) || array_to_string(p_heading_path, chr(30))
    || chr(31) || p_text, 'UTF8'));

-- The weighted vector itself (the recipe the key's version names).
CREATE FUNCTION sitekb.fulltext_vector(p_title text, p_heading_path text[], p_text text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN setweight(to_tsvector('english'::regconfig, coalesce(p_title, '')), 'A')
    || setweight(to_tsvector('english'::regconfig, array_to_string(p_heading_path, ' ')), 'B')
    || setweight(to_tsvector('english'::regconfig, p_text), 'C');

CREATE TABLE sitekb.fulltext_cache (
    key         bytea PRIMARY KEY,
    tsv         tsvector NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
