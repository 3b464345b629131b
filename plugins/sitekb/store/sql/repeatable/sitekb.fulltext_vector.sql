-- The weighted full-text vector of a chunk (the recipe sitekb.fulltext_key's version
-- names): title A, heading path B, text C.
CREATE OR REPLACE FUNCTION sitekb.fulltext_vector(p_title text, p_heading_path text[], p_text text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN setweight(to_tsvector('english'::regconfig, coalesce(p_title, '')), 'A')
    || setweight(to_tsvector('english'::regconfig, array_to_string(p_heading_path, ' ')), 'B')
    || setweight(to_tsvector('english'::regconfig, p_text), 'C');
