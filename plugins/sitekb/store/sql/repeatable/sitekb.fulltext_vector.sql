-- The weighted full-text vector of a chunk (the recipe sitekb.fulltext_key's version
-- names): title A, heading path B, text C, parsed with the text-search configuration
-- of the document's language (sitekb.text_config).
CREATE OR REPLACE FUNCTION sitekb.fulltext_vector(p_config regconfig, p_title text, p_heading_path text[],
                                                  p_text text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN setweight(to_tsvector(p_config, coalesce(p_title, '')), 'A')
    || setweight(to_tsvector(p_config, array_to_string(p_heading_path, ' ')), 'B')
    || setweight(to_tsvector(p_config, p_text), 'C');
