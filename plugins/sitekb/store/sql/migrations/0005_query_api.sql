-- The query API for bot frontends: schema sitekb_api and the types its functions return.
--
-- A frontend connects as sitekb_reader and may use only this schema; it reads
-- through SECURITY DEFINER functions and owner-privileged views and only ever
-- sees snapshots that are or were published. The functions and views live in
-- ../repeatable/ (re-applied whenever they change); the role and its grants in
-- ../privileges.sql. Released as 0.1.0 with the function bodies here as well;
-- a database migrated then gets the same definitions from the repeatable files.

CREATE SCHEMA IF NOT EXISTS sitekb_api;

-- What a search returns, one row per passage.
CREATE TYPE sitekb_api.passage AS (
    snapshot_id   bigint,
    rank          integer,
    chunk_id      text,
    url           text,
    title         text,
    heading_path  text[],
    content       text,
    score         double precision,
    language      text,
    tags          text[],
    published     text
);

-- The snapshot a request reads: what the alias points to, or a pinned id.
CREATE TYPE sitekb_api.resolved_snapshot AS (
    snapshot_id         bigint,
    site                text,
    table_name          text,
    embedding_provider  text,
    embedding_model     text,
    dimensions          integer
);
