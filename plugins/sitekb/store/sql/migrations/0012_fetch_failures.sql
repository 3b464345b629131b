-- Every request of a crawl that got no usable answer: connection refused or
-- lost, timeout, DNS or TLS failure, a transient HTTP status (408, 429, 5xx)
-- after the retries, a redirect chain given up. One row per run and URL, written
-- by the crawler in the same transaction as the pages of its batch
-- (sitekb/store/pages.py); the quality gate counts them as errors
-- (pages.run_totals). A failed URL keeps its stored page row untouched: it is
-- not gone, only not reached this time.

CREATE TABLE sitekb.fetch_failures (
    run_id     text NOT NULL,
    site       text NOT NULL,
    url        text NOT NULL,
    kind       text NOT NULL,   -- connection_refused, connection_lost, timeout, dns, tls, http_503, ...
    detail     text NOT NULL DEFAULT '',
    failed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, url)
);
