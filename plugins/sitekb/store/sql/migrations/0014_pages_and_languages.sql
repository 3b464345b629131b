-- Page-aware results and a text-search configuration per language (issue 14).
--
-- sitekb_api.search gains per_page (at most N passages of one page) and
-- query_language (the language the question is written in); its old signature
-- is dropped so that a call by name cannot pick the old overload.
-- sitekb_api.search_pages returns pages, each with its best passages.
-- The full-text vector of a chunk is made with its document's language's
-- configuration (sitekb.text_config), which the recipe functions now take; a
-- snapshot records the configurations its chunks use, and a question is parsed
-- with each of them unless the caller names its language.

DROP FUNCTION IF EXISTS sitekb_api.search(text, text, vector, integer, text, text, bigint, text, text[], text,
                                          date, date);
DROP FUNCTION IF EXISTS sitekb.fulltext_vector(text, text[], text);
DROP FUNCTION IF EXISTS sitekb.fulltext_key(text, text[], text);

-- The text-search configurations of a snapshot's chunks (NULL for one built before:
-- every chunk of it is English).
ALTER TABLE sitekb.snapshots ADD COLUMN text_configs text[];

-- What sitekb_api.search_pages returns, one row per page: its best passage's
-- score and rank, and its best passages (chunk_id, heading_path, content, score),
-- best first, as a JSON array.
CREATE TYPE sitekb_api.page AS (
    snapshot_id   bigint,
    rank          integer,
    url           text,
    title         text,
    score         double precision,
    language      text,
    tags          text[],
    published     text,
    passages      jsonb
);

-- The language a document is indexed, filtered and searched by, set by the quality
-- checks (sitekb.document_language of the declared and the detected language, else
-- the site's first language). NULL for a document validated before: English.
ALTER TABLE sitekb.documents ADD COLUMN index_language text;
