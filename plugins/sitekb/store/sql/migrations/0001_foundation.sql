-- sitekb foundation schema: pages, documents, chunks, the embedding cache,
-- snapshots and aliases. Snapshot contents live one table per snapshot in the
-- sitekb_snapshots schema (an HNSW index needs a fixed dimension, and a model
-- change changes it).

CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS sitekb;
CREATE SCHEMA IF NOT EXISTS sitekb_snapshots;

CREATE TABLE sitekb.runs (
    run_id       text PRIMARY KEY,
    site         text NOT NULL,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'failed', 'blocked')),
    params       jsonb NOT NULL DEFAULT '{}',
    config       jsonb NOT NULL DEFAULT '{}',
    config_hash  text,
    stages       jsonb NOT NULL DEFAULT '{}',
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX runs_site_started ON sitekb.runs (site, started_at DESC);

-- Latest fetch of every URL of a site. Excluded pages keep no body.
CREATE TABLE sitekb.pages (
    site           text NOT NULL,
    url            text NOT NULL,
    final_url      text,
    status         integer NOT NULL,
    content_type   text,
    etag           text,
    last_modified  text,
    content_hash   text,
    body           text,
    headers        jsonb NOT NULL DEFAULT '{}',
    depth          integer,
    excluded_rule  text,
    links          text[] NOT NULL DEFAULT '{}',  -- in-scope outlinks, followed again on a 304
    fetched_at     timestamptz NOT NULL,
    first_run_id   text NOT NULL,
    last_run_id    text NOT NULL,
    PRIMARY KEY (site, url)
);
CREATE INDEX pages_last_run ON sitekb.pages (site, last_run_id);

-- Why a URL was left out, per run.
CREATE TABLE sitekb.exclusions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL,
    url          text NOT NULL,
    rule         text NOT NULL,
    detail       text,
    run_id       text NOT NULL,
    excluded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, url, rule)
);
CREATE INDEX exclusions_site ON sitekb.exclusions (site, excluded_at DESC);

-- Extracted documents of one run; failed ones are quarantined with reasons.
CREATE TABLE sitekb.documents (
    run_id         text NOT NULL,
    site           text NOT NULL,
    url            text NOT NULL,
    content_hash   text NOT NULL,
    title          text,
    description    text,
    author         text,
    published      text,
    modified       text,
    language       text,
    canonical_url  text,
    tags           text[] NOT NULL DEFAULT '{}',
    markdown       text NOT NULL,
    word_count     integer NOT NULL,
    status         text NOT NULL DEFAULT 'accepted' CHECK (status IN ('accepted', 'quarantined')),
    failures       jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (run_id, url)
);

-- Chunks of one run, before embedding.
CREATE TABLE sitekb.chunks (
    run_id        text NOT NULL,
    chunk_id      text NOT NULL,
    site          text NOT NULL,
    url           text NOT NULL,
    seq           integer NOT NULL,
    heading_path  text[] NOT NULL DEFAULT '{}',
    text          text NOT NULL,
    embed_text    text NOT NULL,
    text_hash     bytea NOT NULL,
    token_count   integer NOT NULL,
    PRIMARY KEY (run_id, chunk_id)
);
CREATE INDEX chunks_run_hash ON sitekb.chunks (run_id, text_hash);

-- A chunk is never embedded twice: keyed by model, dimensions and the exact
-- embedded text. The vector column has no fixed dimension on purpose.
CREATE TABLE sitekb.embedding_cache (
    model       text NOT NULL,
    dimensions  integer NOT NULL,
    text_hash   bytea NOT NULL,
    embedding   vector NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, dimensions, text_hash)
);

CREATE TABLE sitekb.snapshots (
    snapshot_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site               text NOT NULL,
    run_id             text NOT NULL UNIQUE,
    state              text NOT NULL DEFAULT 'building'
                       CHECK (state IN ('building', 'validated', 'published', 'rejected', 'retired')),
    table_name         text,
    embedding_provider text NOT NULL,
    embedding_model    text NOT NULL,
    dimensions         integer NOT NULL,
    tokenizer          text NOT NULL,
    config_hash        text NOT NULL,
    extractor_version  text NOT NULL,
    chunker_version    text NOT NULL,
    counts             jsonb NOT NULL DEFAULT '{}',
    quality            jsonb NOT NULL DEFAULT '{}',
    diff               jsonb NOT NULL DEFAULT '{}',
    reasons            jsonb NOT NULL DEFAULT '[]',
    pinned             boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    built_at           timestamptz
);
CREATE INDEX snapshots_site ON sitekb.snapshots (site, snapshot_id DESC);

CREATE TABLE sitekb.aliases (
    site         text NOT NULL,
    alias        text NOT NULL,
    snapshot_id  bigint NOT NULL REFERENCES sitekb.snapshots (snapshot_id),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, alias)
);

CREATE TABLE sitekb.alias_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site           text NOT NULL,
    alias          text NOT NULL,
    from_snapshot  bigint,
    to_snapshot    bigint NOT NULL,
    actor          text NOT NULL,
    reason         text NOT NULL DEFAULT '',
    moved_at       timestamptz NOT NULL DEFAULT now()
);
