-- Full-text vectors of chunks, computed once per distinct content.
--
-- Keyword search reads a weighted tsvector per chunk: title (A), heading path
-- (B), text (C). Parsing and stemming every word costs several times more than
-- copying the chunk, so, like embeddings, the vector is cached by what it is
-- made of: a run whose pages barely changed computes almost none, and building
-- a snapshot only copies them (sitekb/store/fulltext.py). The key and the
-- vector's recipe are the functions sitekb.fulltext_key and
-- sitekb.fulltext_vector (../repeatable/).

CREATE TABLE sitekb.fulltext_cache (
    key         bytea PRIMARY KEY,
    tsv         tsvector NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
