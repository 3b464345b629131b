-- A snapshot is a manifest of immutable segments (sitekb/store/segments.py).
--
-- A base segment is one bulk-loaded table sitekb_snapshots.seg_<id> (segment_id and the
-- columns a snapshot table had: chunk, page, text, vector, full-text vector), indexed after
-- its load (HNSW, GIN, primary key, url), with its BM25 postings seg_<id>_postings. Each
-- delta segment built on a base is one load appended to the base's table (and postings)
-- under its own segment_id, so that one index scan reads a snapshot's base and deltas
-- alike, where a table per delta costs a scan each. Rows are only ever appended: a
-- segment never changes once built. A snapshot lists its segments (sitekb.snapshot_segments)
-- and the chunks of those segments it no longer holds (sitekb.tombstones): a refresh
-- writes one delta segment with its new and changed chunks and tombstones the chunks
-- that went, and shares every other segment with the snapshot it was built on.
-- Compaction merges a snapshot's segments into a new base; retention drops a segment
-- when no snapshot lists it any more.
--
-- Readers see none of this: sitekb_snapshots.snap_<id> stays the snapshot's rows (now
-- a view over its segments, tombstones filtered out), and the search still reads the
-- views "chunks" and "postings" of schema sitekb_snap_<id>.
CREATE TABLE sitekb.segments (
    segment_id  bigserial PRIMARY KEY,
    site        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('base', 'delta')),
    model       text NOT NULL,
    dimensions  integer NOT NULL,
    run_id      text,                          -- the run whose chunks it holds (a compaction's: NULL)
    stored_in   bigint REFERENCES sitekb.segments (segment_id),  -- a delta: the base whose table holds its rows
    rows        bigint NOT NULL DEFAULT 0,
    built_at    timestamptz NOT NULL DEFAULT now(),
    built_for   bigint                         -- the snapshot whose build or compaction made it
);
CREATE INDEX segments_site ON sitekb.segments (site, segment_id);
CREATE INDEX segments_stored_in ON sitekb.segments (stored_in) WHERE stored_in IS NOT NULL;

CREATE TABLE sitekb.snapshot_segments (
    snapshot_id bigint NOT NULL REFERENCES sitekb.snapshots (snapshot_id) ON DELETE CASCADE,
    segment_id  bigint NOT NULL REFERENCES sitekb.segments (segment_id),
    position    integer NOT NULL,              -- 0 the base, then the deltas in the order they came
    PRIMARY KEY (snapshot_id, segment_id)
);
CREATE INDEX snapshot_segments_segment ON sitekb.snapshot_segments (segment_id);

CREATE TABLE sitekb.tombstones (
    snapshot_id bigint NOT NULL,
    segment_id  bigint NOT NULL,
    chunk_id    text NOT NULL,
    PRIMARY KEY (snapshot_id, segment_id, chunk_id),
    FOREIGN KEY (snapshot_id, segment_id) REFERENCES sitekb.snapshot_segments (snapshot_id, segment_id)
        ON DELETE CASCADE
);

-- BM25 corpus statistics of a snapshot (its chunks and the sum of their lengths); the
-- document frequency of each lexeme is in sitekb_snapshots.snap_<id>_terms.
ALTER TABLE sitekb.snapshots ADD COLUMN corpus_chunks bigint, ADD COLUMN corpus_length double precision;
