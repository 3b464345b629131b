-- What a snapshot covers (issue 15, sitekb/coverage.py): the share of its chunks per
-- site section (first URL path segment), tag, language and topic cluster, the
-- clusters' labels, and the warnings of the site's coverage settings. Computed by the
-- build stage from the snapshot's table, and on demand (`sitekb coverage`) for a
-- snapshot built before this migration.
--
-- One row per snapshot, beside its record rather than a column of it: the record is
-- read whole (SELECT *) into a fixed shape, and coverage is recomputed by itself.
-- A snapshot record trimmed with its run's history takes its coverage along.
CREATE TABLE sitekb.snapshot_coverage (
    snapshot_id  bigint PRIMARY KEY REFERENCES sitekb.snapshots (snapshot_id) ON DELETE CASCADE,
    coverage     jsonb NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now()
);
