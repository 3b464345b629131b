-- What embedding has cost each run, written in the same transaction as each
-- batch's vectors go into sitekb.embedding_cache. A run's budget counts every
-- attempt (a retried task sees what earlier attempts spent), and the table is
-- the run's embedding progress: requests, inputs and tokens sent so far.

CREATE TABLE IF NOT EXISTS sitekb.embedding_spend (
    run_id      text NOT NULL,
    provider    text NOT NULL,
    model       text NOT NULL,
    dimensions  integer NOT NULL,
    requests    integer NOT NULL DEFAULT 0,
    inputs      integer NOT NULL DEFAULT 0,
    tokens      bigint NOT NULL DEFAULT 0,
    usd         numeric(14, 6) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, model, dimensions)
);
