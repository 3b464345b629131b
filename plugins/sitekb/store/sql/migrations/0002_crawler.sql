-- Per-run crawl statistics: what was fetched, skipped and why, what failed,
-- how many bytes and seconds it took. One row per run (a retried crawl task
-- overwrites its row). `full` records whether the crawl ignored stored pages,
-- which decides when the next full recrawl is due (crawl.full_recrawl_days).

CREATE TABLE IF NOT EXISTS sitekb.crawl_stats (
    run_id                text PRIMARY KEY,
    site                  text NOT NULL,
    full_crawl            boolean NOT NULL,
    finished_at           timestamptz NOT NULL DEFAULT now(),
    seconds               double precision NOT NULL DEFAULT 0,
    requests              integer NOT NULL DEFAULT 0,
    bytes                 bigint NOT NULL DEFAULT 0,
    fetched               integer NOT NULL DEFAULT 0,
    not_modified          integer NOT NULL DEFAULT 0,
    unchanged_by_sitemap  integer NOT NULL DEFAULT 0,
    retries               integer NOT NULL DEFAULT 0,
    excluded              jsonb NOT NULL DEFAULT '{}',   -- rule -> count (consent and scope)
    skipped               jsonb NOT NULL DEFAULT '{}',   -- rule -> count (limits, content types)
    errors                jsonb NOT NULL DEFAULT '{}',   -- kind -> count (http_503, timeout, ...)
    bad_input             jsonb NOT NULL DEFAULT '{}',   -- kind -> count (charset_mismatch, ...)
    stats                 jsonb NOT NULL DEFAULT '{}'    -- the whole summary, for anything else
);
CREATE INDEX IF NOT EXISTS crawl_stats_site ON sitekb.crawl_stats (site, finished_at DESC);
