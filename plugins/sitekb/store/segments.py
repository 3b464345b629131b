"""Segments: a snapshot is a manifest of immutable segments plus tombstones.

A base segment is one table ``sitekb_snapshots.seg_<id>`` loaded in one
statement and indexed after its load (HNSW, GIN, primary key, url), with its
BM25 postings ``seg_<id>_postings`` (``sitekb.build_segment_postings``). A
delta segment is one load appended to its base's table under its own
``segment_id`` (the inserts keep the indexes up; its postings go to the base's
``seg_<id>_delta_postings``; a large delta over several connections, committed
before its snapshot lists it: :func:`_append_in_parallel`): a vector search then reads one index scan
however many deltas a snapshot holds, where a table per delta cost
a scan each (measured: about 0.4 ms per 1,000-row delta, as much as the
100,000-row base's). Rows are only appended, never changed. A snapshot lists
segments (``sitekb.snapshot_segments``) and the chunks of those segments it no
longer holds (``sitekb.tombstones``); its readers see one view,
``sitekb_snapshots.snap_<id>`` (``sitekb.snapshot_views``), filtered to its
segments.

A build compares the run's staged chunks with the newest snapshot of the site
that has the same embedding model (:func:`base_for`): chunks that are new or
changed (any column a reader sees: page, title, headings, order, language,
tags, date; the text and so the vector are in the chunk id) go into one delta
segment, chunks that went or changed are tombstoned, and every other segment is
shared. A refresh that would replace most of its base (:data:`REBASE_SHARE`),
a different model or dimension, or a site's first build writes a new base
segment instead. A snapshot never changes what it holds; compaction
(:func:`compact`) only moves the same rows into one new base segment.
Retention drops a segment when no snapshot lists it (:func:`drop_unreferenced`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from sitekb.errors import NotFound, SitekbError
from sitekb.store import locks
from sitekb.store.connection import sibling

# A refresh that removes or replaces more than this share of its base's chunks (or adds
# more than the base holds) writes a new base: a delta that large saves little and leaves
# many tombstones to filter.
REBASE_SHARE = 0.5
# Compaction is due when the deltas and tombstones of a snapshot pass this share of its
# base's rows, or when it holds this many deltas.
COMPACT_SHARE = 0.2
COMPACT_DELTAS = 8
# A delta of at least PARALLEL_MIN_ROWS rows is appended over LOAD_CONNECTIONS connections at
# once: each row's insert walks the base's HNSW graph (about 7 ms a row at 100,000 chunks here),
# and Postgres runs one INSERT in one process. Two connections halved a 1,000-row delta's load
# on this 2-core machine; a smaller delta is not worth the connections.
LOAD_CONNECTIONS = 2
PARALLEL_MIN_ROWS = 200
# A reader holds ACCESS SHARE on the views for the length of a search (milliseconds):
# swapping a snapshot's views waits at most this long for them, then gives up cleanly.
SWAP_LOCK_TIMEOUT = "5s"
DROP_LOCK_TIMEOUT = "2s"

_ROW_COLUMNS = ("url", "title", "heading_path", "seq", "token_count", "language", "tags", "published")
# A segment's columns as a snapshot's readers see them (the base's table adds segment_id).
_COLUMNS = ("chunk_id", "url", "title", "heading_path", "seq", "content", "token_count", "language", "tags",
            "published", "embedding", "tsv")


@dataclass
class Segment:
    """One segment of a snapshot's manifest."""

    segment_id: int
    kind: str            # base | delta
    position: int        # 0 the base, then the deltas in the order they came
    rows: int            # rows the segment holds
    tombstones: int      # of those, the ones this snapshot no longer holds
    run_id: str | None   # the run whose chunks it holds (a compaction's: None)
    built_for: int | None
    stored_in: int | None = None   # a delta: the base whose table holds its rows

    @property
    def live(self) -> int:
        return self.rows - self.tombstones

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "live": self.live}


def table(segment_id: int) -> sql.Composed:
    return sql.Identifier("sitekb_snapshots", f"seg_{segment_id}")


def rows_of(segment: Segment) -> tuple[sql.Composable, sql.Composable]:
    """Where a segment's rows are: (its base's table, the condition on its alias ``t``)."""
    return (table(segment.stored_in or segment.segment_id),
            sql.SQL("t.segment_id = {}").format(sql.Literal(segment.segment_id)))


def manifest(conn: psycopg.Connection, snapshot_id: int) -> list[Segment]:
    """The segments a snapshot lists, base first, with its tombstones per segment."""
    rows = conn.execute(
        """SELECT g.segment_id, g.kind, ss.position, g.rows,
                  (SELECT count(*) FROM sitekb.tombstones t
                   WHERE t.snapshot_id = ss.snapshot_id AND t.segment_id = ss.segment_id),
                  g.run_id, g.built_for, g.stored_in
           FROM sitekb.snapshot_segments ss JOIN sitekb.segments g ON g.segment_id = ss.segment_id
           WHERE ss.snapshot_id = %s ORDER BY ss.position, ss.segment_id""", (snapshot_id,)).fetchall()
    return [Segment(*row) for row in rows]


def base_for(conn: psycopg.Connection, snapshot_id: int) -> int | None:
    """The snapshot a new snapshot builds on: the site's newest other one with the same model, BM25 recipe and rows."""
    row = conn.execute(
        """SELECT b.snapshot_id FROM sitekb.snapshots s JOIN sitekb.snapshots b
             ON b.site = s.site AND b.embedding_model = s.embedding_model AND b.dimensions = s.dimensions
           WHERE s.snapshot_id = %s AND b.snapshot_id <> s.snapshot_id AND b.table_name IS NOT NULL
             AND b.state <> 'building' AND b.corpus_chunks IS NOT NULL
             -- Its postings counted as a new segment's would be (sitekb.bm25_terms).
             AND b.bm25_recipe IS NOT DISTINCT FROM sitekb.bm25_recipe()
             AND to_regclass(format('%%I.%%I', 'sitekb_snapshots', 'snap_' || b.snapshot_id || '_terms')) IS NOT NULL
             AND EXISTS (SELECT 1 FROM sitekb.snapshot_segments ss WHERE ss.snapshot_id = b.snapshot_id)
           ORDER BY b.snapshot_id DESC LIMIT 1""", (snapshot_id,)).fetchone()
    return row[0] if row else None


# -- building ---------------------------------------------------------------

def stage_run(conn: psycopg.Connection, run_id: str) -> int:
    """The run's accepted chunks, as a reader would see each row (temporary table ``_staged``); returns how many."""
    conn.execute("DROP TABLE IF EXISTS pg_temp._staged")
    # Every staged row is read, so hash joins are right; the stages have just written those rows,
    # and without fresh statistics the planner picks per-row nested loops (minutes at 100k chunks).
    conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
    staged = conn.execute(
        """CREATE TEMP TABLE _staged ON COMMIT DROP AS
           SELECT c.chunk_id, c.url, d.title, c.heading_path, c.seq, c.token_count,
                  coalesce(d.index_language, d.language) AS language, d.tags, d.published
           FROM sitekb.chunks c JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
           WHERE c.run_id = %s AND d.status = 'accepted'""", (run_id,)).rowcount
    conn.execute("SELECT set_config('enable_nestloop', 'on', true)")
    conn.execute("ALTER TABLE _staged ADD PRIMARY KEY (chunk_id)")
    conn.execute("ANALYZE _staged")
    return staged


def compare(conn: psycopg.Connection, base_id: int) -> tuple[int, int]:
    """What ``_staged`` changes against snapshot ``base_id``: temporary tables ``_added`` and ``_removed``.

    ``_added`` (chunk_id): staged rows the base does not hold as they are; ``_removed``
    (segment_id, chunk_id): the base's rows that are not staged as they are. Returns both counts.
    """
    live = sql.SQL(" UNION ALL ").join(
        sql.SQL("""SELECT {seg}::bigint AS segment_id, t.chunk_id, {cols} FROM {table} t
                   WHERE {own} AND NOT EXISTS (SELECT 1 FROM sitekb.tombstones g WHERE g.snapshot_id = {base}
                                                 AND g.segment_id = {seg} AND g.chunk_id = t.chunk_id)""").format(
            seg=sql.Literal(s.segment_id), base=sql.Literal(base_id), table=rows_of(s)[0], own=rows_of(s)[1],
            cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in _ROW_COLUMNS))
        for s in manifest(conn, base_id))
    same = sql.SQL(" AND ").join(sql.SQL("s.{c} IS NOT DISTINCT FROM l.{c}").format(c=sql.Identifier(c))
                                 for c in _ROW_COLUMNS)
    conn.execute("DROP TABLE IF EXISTS pg_temp._live, pg_temp._added, pg_temp._removed")
    # Every row of the base is compared: hash joins. The tombstones just written have no
    # statistics, and a nested loop over them costs rows x tombstones (minutes at 100k chunks).
    conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
    conn.execute(sql.SQL("CREATE TEMP TABLE _live ON COMMIT DROP AS {}").format(live))
    conn.execute("ANALYZE _live")
    added = conn.execute(sql.SQL(
        """CREATE TEMP TABLE _added ON COMMIT DROP AS SELECT s.chunk_id FROM _staged s
           WHERE NOT EXISTS (SELECT 1 FROM _live l WHERE l.chunk_id = s.chunk_id AND {same})""").format(same=same)
    ).rowcount
    removed = conn.execute(sql.SQL(
        """CREATE TEMP TABLE _removed ON COMMIT DROP AS SELECT l.segment_id, l.chunk_id FROM _live l
           WHERE NOT EXISTS (SELECT 1 FROM _staged s WHERE s.chunk_id = l.chunk_id AND {same})""").format(same=same)
    ).rowcount
    conn.execute("SELECT set_config('enable_nestloop', 'on', true)")
    conn.execute("ANALYZE _added")
    conn.execute("ANALYZE _removed")
    return added, removed


def load(conn: psycopg.Connection, *, snapshot_id: int, site: str, run_id: str, model: str, dimensions: int,
         stored_in: int | None) -> tuple[int, int, int]:
    """Load a new segment with the run's chunks; returns (id, rows, connections that loaded them).

    ``stored_in`` None: a base, every staged chunk, in a new table ``seg_<id>``. Else a delta,
    the chunks in ``_added``, appended to that base's table (its indexes kept up by the
    inserts); a large one over several connections (:func:`_append_in_parallel`). Raises when a
    chunk has no cached embedding (the embed task did not finish).
    """
    delta = stored_in is not None
    connections = 1
    if delta and _parallel(conn):
        connections = LOAD_CONNECTIONS
        segment_id, loaded = _append_in_parallel(conn, snapshot_id=snapshot_id, site=site, run_id=run_id,
                                                 model=model, dimensions=dimensions, stored_in=stored_in)
    else:
        segment_id = _new_segment(conn, site=site, delta=delta, model=model, dimensions=dimensions, run_id=run_id,
                                  snapshot_id=snapshot_id, stored_in=stored_in)
        if delta:
            # A delta's few chunks and their documents are read by primary key, as arrays: the
            # stages have just written the run's rows, which have no statistics yet, and a join
            # from ``_added`` made the planner hash every chunk of the run and scan its documents
            # once per added chunk (seconds for 1,000 of 100,000 chunks).
            only = sql.SQL("""AND c.chunk_id = ANY (ARRAY(SELECT chunk_id FROM _added))
                   AND d.url = ANY (ARRAY(SELECT DISTINCT s.url FROM _staged s JOIN _added a USING (chunk_id)))""")
            target = _append_to(stored_in, segment_id)
        else:
            only = sql.SQL("")
            target = sql.SQL("CREATE TABLE {} WITH (toast_tuple_target = 8160) AS SELECT {}::bigint AS segment_id, "
                             ).format(table(segment_id), sql.Literal(segment_id))
        loaded = conn.execute(_load_rows(target, only, run_id=run_id, model=model, dimensions=dimensions)).rowcount
    expected = conn.execute("SELECT count(*) FROM _added" if delta else "SELECT count(*) FROM _staged").fetchone()[0]
    if loaded != expected:
        raise SitekbError(
            f"snapshot {snapshot_id}: {expected - loaded} chunks have no cached embedding; "
            "re-run the embed task before building"
        )
    conn.execute("UPDATE sitekb.segments SET rows = %s WHERE segment_id = %s", (loaded, segment_id))
    return segment_id, loaded, connections


def _new_segment(conn: psycopg.Connection, *, site: str, delta: bool, model: str, dimensions: int, run_id: str,
                 snapshot_id: int, stored_in: int | None) -> int:
    return conn.execute(
        """INSERT INTO sitekb.segments (site, kind, model, dimensions, run_id, built_for, stored_in)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING segment_id""",
        (site, "delta" if delta else "base", model, dimensions, run_id, snapshot_id, stored_in)).fetchone()[0]


def _append_to(stored_in: int, segment_id: int) -> sql.Composed:
    return sql.SQL("INSERT INTO {} (segment_id, {}) SELECT {}::bigint, ").format(
        table(stored_in), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), sql.Literal(segment_id))


def _load_rows(target: sql.Composable, only: sql.Composable, *, run_id: str, model: str,
               dimensions: int) -> sql.Composed:
    """``target`` (an INSERT or CREATE TABLE AS) of the run's accepted chunks as a segment holds them, ``only``
    those its condition keeps."""
    # A row (vector + full-text vector + text) is usually over the 2 kB at which Postgres moves
    # values out of line: TOAST would write each row's vector and full-text vector to a second
    # table and index, which halves the load speed and makes the HNSW build and keyword ranking
    # read them back from there. Rows stay whole up to a page (8 kB): with 384 or 768 dimensions
    # they fit. A 1536-dimension vector (6 kB, OpenAI's default) plus text and full-text vector
    # does not, and Postgres still moves the largest value (the vector) out of line.
    return sql.SQL(
        """{target} c.chunk_id, c.url, d.title, c.heading_path, c.seq, c.text AS content, c.token_count,
                  coalesce(d.index_language, d.language) AS language, d.tags, d.published,
                  e.embedding::vector({dims}) AS embedding,
                  -- The chunk stage cached the full-text vectors (sitekb.store.fulltext); one it
                  -- missed (a run chunked before migration 0007) is computed here.
                  coalesce(f.tsv, sitekb.fulltext_vector(sitekb.text_config(d.index_language), d.title,
                                                         c.heading_path, c.text)) AS tsv
           FROM sitekb.chunks c
           JOIN sitekb.documents d ON d.run_id = c.run_id AND d.url = c.url
           JOIN sitekb.embedding_cache e
             ON e.model = {model} AND e.dimensions = {dims} AND e.text_hash = c.text_hash
           LEFT JOIN sitekb.fulltext_cache f ON f.key = sitekb.fulltext_key(sitekb.text_config(d.index_language),
                                                                            d.title, c.heading_path, c.text)
           WHERE c.run_id = {run_id} AND d.status = 'accepted' {only}""").format(
        target=target, only=only, dims=sql.Literal(dimensions), model=sql.Literal(model),
        run_id=sql.Literal(run_id))


def _parallel(conn: psycopg.Connection) -> bool:
    """Whether this build's delta is appended over several connections: large enough, and the build's
    transaction sees what other sessions commit (READ COMMITTED: the postings read the rows next)."""
    if LOAD_CONNECTIONS < 2:
        return False
    if conn.execute("SELECT current_setting('transaction_isolation')").fetchone()[0] != "read committed":
        return False
    return conn.execute("SELECT count(*) FROM _added").fetchone()[0] >= PARALLEL_MIN_ROWS


def _append_in_parallel(conn: psycopg.Connection, *, snapshot_id: int, site: str, run_id: str, model: str,
                        dimensions: int, stored_in: int) -> tuple[int, int]:
    """Append ``_added``'s chunks to base ``stored_in`` over :data:`LOAD_CONNECTIONS` connections; (id, rows).

    Each connection inserts a share of the rows and commits, so the segment's record is committed
    first too (no snapshot lists it yet, so no reader sees its rows). A build that fails after
    this leaves the record and its rows unlisted, under a snapshot still ``building``: retention
    leaves them to that build, and its retry or :func:`sitekb.store.snapshots.abandon_building`
    drops them (:func:`drop_unreferenced` with ``own``).
    """
    with sibling(conn, "delta load") as side:
        segment_id = _new_segment(side, site=site, delta=True, model=model, dimensions=dimensions, run_id=run_id,
                                  snapshot_id=snapshot_id, stored_in=stored_in)
    pages = conn.execute("SELECT s.url, array_agg(a.chunk_id) FROM _added a JOIN _staged s USING (chunk_id) "
                         "GROUP BY s.url ORDER BY s.url").fetchall()
    shares: list[tuple[list[str], list[str]]] = [([], []) for _ in range(LOAD_CONNECTIONS)]
    for url, ids in pages:   # whole pages, the share with the fewest chunks next
        urls, chunk_ids = min(shares, key=lambda share: len(share[1]))
        urls.append(url)
        chunk_ids.extend(ids)
    statement = _load_rows(_append_to(stored_in, segment_id),
                           sql.SQL("AND c.chunk_id = ANY (%(ids)s) AND d.url = ANY (%(urls)s)"),
                           run_id=run_id, model=model, dimensions=dimensions)

    def insert(share: tuple[list[str], list[str]]) -> int:
        with sibling(conn, "delta load") as worker:
            return worker.execute(statement, {"urls": share[0], "ids": share[1]}).rowcount

    with ThreadPoolExecutor(max_workers=LOAD_CONNECTIONS) as pool:
        futures = [pool.submit(insert, share) for share in shares if share[1]]
    return segment_id, sum(f.result() for f in futures)   # the first failure is raised, after all finished


def index(conn: psycopg.Connection, segment_id: int, rows: int, dimensions: int, *, delta: bool = False) -> int:
    """Index a loaded base (primary key, HNSW, GIN, url) and build a segment's postings; returns the postings.

    A delta's rows were indexed as they were appended to its base: only its postings are built.
    """
    if delta:
        # No ANALYZE of the base's table: a delta adds a few percent to it, and sampling it costs
        # seconds at 100,000 rows; the statistics of the base stand (autovacuum renews them).
        return conn.execute("SELECT sitekb.build_segment_postings(%s, ARRAY(SELECT chunk_id FROM _added))",
                            (segment_id,)).fetchone()[0]
    seg = table(segment_id)
    # The HNSW graph is built in memory when it fits: give the build room for the vectors
    # plus their neighbour lists (bounded, and only for this transaction).
    conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (f"{_index_memory_mb(rows, dimensions)}MB",))
    # A chunk id may come back in a later delta (a page restored): unique per segment.
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (chunk_id, segment_id)").format(seg))
    conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(seg))
    # Deltas appended later add their full-text vectors to the pending list, merged by vacuum
    # rather than by the refresh (the default 4 MB list overflows at a few hundred chunks and
    # merges during the insert). Keyword search reads the postings; this index serves the
    # cover-density fallback of a snapshot without BM25 statistics.
    conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (tsv) WITH (fastupdate = on, gin_pending_list_limit = 65536)"
                         ).format(seg))
    conn.execute(sql.SQL("CREATE INDEX ON {} (url)").format(seg))
    conn.execute(sql.SQL("ANALYZE {}").format(seg))
    return conn.execute("SELECT sitekb.build_segment_postings(%s)", (segment_id,)).fetchone()[0]


def list_base(conn: psycopg.Connection, snapshot_id: int, segment_id: int) -> None:
    """A snapshot made of one (base) segment and no tombstones."""
    conn.execute("INSERT INTO sitekb.snapshot_segments (snapshot_id, segment_id, position) VALUES (%s, %s, 0)",
                 (snapshot_id, segment_id))


def list_on_base(conn: psycopg.Connection, snapshot_id: int, base_id: int, delta_id: int | None) -> None:
    """A snapshot made of its base's segments (but those left with no rows), ``delta_id`` and tombstones.

    The tombstones are the base's plus ``_removed``.
    """
    conn.execute(
        """CREATE TEMP TABLE _gone ON COMMIT DROP AS
           SELECT segment_id, chunk_id FROM sitekb.tombstones WHERE snapshot_id = %s
           UNION SELECT segment_id, chunk_id FROM _removed""", (base_id,))
    conn.execute(
        """INSERT INTO sitekb.snapshot_segments (snapshot_id, segment_id, position)
           SELECT %(new)s, ss.segment_id, ss.position
           FROM sitekb.snapshot_segments ss JOIN sitekb.segments g ON g.segment_id = ss.segment_id
           WHERE ss.snapshot_id = %(base)s
             AND (g.stored_in IS NULL OR g.rows > (SELECT count(*) FROM _gone x WHERE x.segment_id = ss.segment_id))""",
        {"new": snapshot_id, "base": base_id})
    if delta_id is not None:
        conn.execute(
            """INSERT INTO sitekb.snapshot_segments (snapshot_id, segment_id, position)
               SELECT %(new)s, %(delta)s, coalesce(max(position), 0) + 1
               FROM sitekb.snapshot_segments WHERE snapshot_id = %(base)s""",
            {"new": snapshot_id, "delta": delta_id, "base": base_id})
    conn.execute(
        """INSERT INTO sitekb.tombstones (snapshot_id, segment_id, chunk_id)
           SELECT %s, x.segment_id, x.chunk_id FROM _gone x
           WHERE EXISTS (SELECT 1 FROM sitekb.snapshot_segments ss WHERE ss.snapshot_id = %s
                           AND ss.segment_id = x.segment_id)""", (snapshot_id, snapshot_id))
    conn.execute("DROP TABLE _gone")


def terms_on_base(conn: psycopg.Connection, snapshot_id: int, base_id: int, delta_id: int | None) -> int:
    """The BM25 statistics of a snapshot built on ``base_id``: its counts, less ``_removed``, plus the delta's.

    The same numbers ``sitekb.build_postings`` counts from every chunk, at the cost of the
    chunks that changed: their rows are read once, by primary key (a scan of the base's
    table for them cost a second at 50,000 chunks). Returns the number of lexemes.
    """
    listed = {s.segment_id: s for s in manifest(conn, snapshot_id) + manifest(conn, base_id)}
    went = [sql.SQL("""SELECT -1 AS sign, t.tsv FROM {table} t WHERE {own}
                         AND t.chunk_id = ANY (ARRAY(SELECT chunk_id FROM _removed WHERE segment_id = {seg}))"""
                    ).format(
                table=rows_of(listed[seg])[0], own=rows_of(listed[seg])[1], seg=sql.Literal(seg))
            for (seg,) in conn.execute("SELECT DISTINCT segment_id FROM _removed").fetchall()]
    came = []
    if delta_id is not None:
        table_of, own = rows_of(listed[delta_id])
        came = [sql.SQL("""SELECT 1 AS sign, t.tsv FROM {} t WHERE {}
                           AND t.chunk_id = ANY (ARRAY(SELECT chunk_id FROM _added))""").format(table_of, own)]
    changed = sql.SQL(" UNION ALL ").join(went + came) if went or came else sql.SQL(
        "SELECT 0 AS sign, NULL::tsvector AS tsv WHERE false")
    conn.execute("DROP TABLE IF EXISTS pg_temp._term_changes")
    conn.execute(sql.SQL(
        """CREATE TEMP TABLE _term_changes ON COMMIT DROP AS
           SELECT b.lexeme, sum(c.sign)::integer AS df, sum(c.sign * b.tf)::float8 AS tf
           FROM ({changed}) c CROSS JOIN LATERAL sitekb.bm25_terms(c.tsv) b GROUP BY b.lexeme""").format(
        changed=changed))
    terms = sql.Identifier("sitekb_snapshots", f"snap_{snapshot_id}_terms")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(terms))
    lexemes = conn.execute(sql.SQL(
        """CREATE TABLE {terms} AS
           SELECT lexeme, sum(df)::integer AS df, sum(tf)::float8 AS tf
           FROM (SELECT lexeme, df, tf FROM {base} UNION ALL SELECT lexeme, df, tf FROM _term_changes) x
           GROUP BY lexeme HAVING sum(df) > 0""").format(
        terms=terms, base=sql.Identifier("sitekb_snapshots", f"snap_{base_id}_terms"))).rowcount
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (lexeme)").format(terms))
    # A chunk's length is the sum of its lexemes' frequencies: the corpus's changes by as much as theirs.
    conn.execute(
        """UPDATE sitekb.snapshots s
           SET corpus_chunks = b.corpus_chunks - (SELECT count(*) FROM _removed) + (SELECT count(*) FROM _added),
               corpus_length = b.corpus_length + (SELECT coalesce(sum(tf), 0) FROM _term_changes),
               bm25_recipe = b.bm25_recipe
           FROM sitekb.snapshots b WHERE s.snapshot_id = %s AND b.snapshot_id = %s""",
        (snapshot_id, base_id))
    return lexemes


# -- dropping -----------------------------------------------------------------

def drop_snapshot(conn: psycopg.Connection, snapshot_id: int) -> None:
    """Drop what a snapshot's readers read and its manifest; its segments stay while another snapshot lists them."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"sitekb_snap_{snapshot_id}")))
    for name in (f"snap_{snapshot_id}_postings", f"snap_{snapshot_id}"):
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                            (f"sitekb_snapshots.{name}",)).fetchone()
        if kind is not None:   # a view; a table when built before segments
            conn.execute(sql.SQL("DROP {} {} CASCADE").format(
                sql.SQL("VIEW" if kind[0] == "v" else "TABLE"), sql.Identifier("sitekb_snapshots", name)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
        sql.Identifier("sitekb_snapshots", f"snap_{snapshot_id}_terms")))
    conn.execute("DELETE FROM sitekb.snapshot_segments WHERE snapshot_id = %s", (snapshot_id,))


def drop_unreferenced(conn: psycopg.Connection, *, lock_timeout: str = DROP_LOCK_TIMEOUT,
                      own: int | None = None) -> list[int]:
    """Drop every segment no snapshot lists; a table a session is reading is left for the next call.

    A delta's rows are deleted from its base's table; a base's table goes once no delta
    stored in it is listed either. A segment built for a snapshot still ``building`` is that
    build's (a delta loaded over several connections is committed before its snapshot lists
    it): left alone unless ``own`` is that snapshot (its retry, or its abandonment).
    """
    dropped = []
    unreferenced = conn.execute(
        """SELECT g.segment_id, g.stored_in FROM sitekb.segments g
           WHERE NOT EXISTS (SELECT 1 FROM sitekb.snapshot_segments ss WHERE ss.segment_id = g.segment_id)
             AND (g.built_for IS NOT DISTINCT FROM %s
                  OR NOT EXISTS (SELECT 1 FROM sitekb.snapshots s
                                 WHERE s.snapshot_id = g.built_for AND s.state = 'building'))
           ORDER BY g.stored_in IS NULL, g.segment_id""", (own,)).fetchall()   # deltas first
    for segment_id, stored_in in unreferenced:
        try:
            with conn.transaction():   # a savepoint: a busy segment is skipped, the rest still go
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
                if stored_in is not None:
                    for name in (f"seg_{stored_in}", f"seg_{stored_in}_delta_postings"):
                        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"sitekb_snapshots.{name}",)
                                        ).fetchone()[0]:
                            conn.execute(sql.SQL("DELETE FROM {} WHERE segment_id = %s").format(
                                sql.Identifier("sitekb_snapshots", name)), (segment_id,))
                else:
                    if conn.execute("SELECT 1 FROM sitekb.segments WHERE stored_in = %s", (segment_id,)).fetchone():
                        continue   # a delta stored in it is still listed
                    for name in (f"seg_{segment_id}_delta_postings", f"seg_{segment_id}_postings", f"seg_{segment_id}"):
                        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.Identifier("sitekb_snapshots", name)))
                conn.execute("DELETE FROM sitekb.segments WHERE segment_id = %s", (segment_id,))
            dropped.append(segment_id)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.ForeignKeyViolation):
            continue   # read right now, or listed by a snapshot committed since the query above
    return dropped


# -- compaction ---------------------------------------------------------------

def compaction_due(segments: list[Segment]) -> str | None:
    """Why a snapshot's segments should be merged, or None."""
    if len(segments) < 2 and not any(s.tombstones for s in segments):
        return None
    base = segments[0].rows if segments else 0
    deltas = segments[1:]
    churn = sum(s.rows for s in deltas) + sum(s.tombstones for s in segments)
    if len(deltas) >= COMPACT_DELTAS:
        return f"{len(deltas)} delta segments (compaction at {COMPACT_DELTAS})"
    if base and churn > COMPACT_SHARE * base:
        return (f"deltas and tombstones hold {churn} rows, {churn / base:.0%} of the base's {base} "
                f"(compaction above {COMPACT_SHARE:.0%})")
    return None


def compact(conn: psycopg.Connection, snapshot_id: int, *, force: bool = False) -> dict[str, Any]:
    """Merge a snapshot's segments into one new base segment holding exactly its rows.

    The new segment is loaded and indexed while searches keep reading the old
    ones; then, in the same transaction, the manifest is replaced and the views
    swapped (waiting at most :data:`SWAP_LOCK_TIMEOUT` for running searches).
    The snapshot's rows, statistics and scores do not change. Segments no
    snapshot lists any more are dropped afterwards. Not due and not ``force``:
    nothing happens, and the result says why.
    """
    before = manifest(conn, snapshot_id)
    if not before:
        raise NotFound(f"snapshot {snapshot_id} has no segments (retention dropped it, or it is not built)")
    due = compaction_due(before)
    result: dict[str, Any] = {"snapshot_id": snapshot_id, "segments_before": [s.segment_id for s in before],
                              "due": due}
    if due is None and not force:
        return {**result, "compacted": False}
    started = time.monotonic()
    with conn.transaction():
        locks.hold(conn, f"compacting snapshot {snapshot_id}", "sitekb.segments", str(snapshot_id), wait="1s")
        snap = conn.execute("SELECT site, embedding_model, dimensions, table_name FROM sitekb.snapshots "
                            "WHERE snapshot_id = %s", (snapshot_id,)).fetchone()
        if snap is None or snap[3] is None or manifest(conn, snapshot_id) != before:
            raise SitekbError(f"snapshot {snapshot_id} changed while compaction started (retention or "
                              "another compaction); run it again")
        site, model, dimensions, _ = snap
        # Background work: one process, so that searches keep the other cores (an HNSW build
        # otherwise takes every parallel maintenance worker it may).
        conn.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true), "
                     "set_config('max_parallel_workers_per_gather', '0', true)")
        segment_id = conn.execute(
            """INSERT INTO sitekb.segments (site, kind, model, dimensions, run_id, built_for)
               VALUES (%s, 'base', %s, %s, NULL, %s) RETURNING segment_id""",
            (site, model, dimensions, snapshot_id)).fetchone()[0]
        rows = conn.execute(sql.SQL(
            "CREATE TABLE {} WITH (toast_tuple_target = 8160) AS SELECT {}::bigint AS segment_id, * FROM {} "
            "ORDER BY url, seq").format(
            table(segment_id), sql.Literal(segment_id), sql.Identifier("sitekb_snapshots", f"snap_{snapshot_id}"))
        ).rowcount
        conn.execute("UPDATE sitekb.segments SET rows = %s WHERE segment_id = %s", (rows, segment_id))
        index(conn, segment_id, rows, dimensions)
        built = time.monotonic()
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (SWAP_LOCK_TIMEOUT,))
        conn.execute("DELETE FROM sitekb.snapshot_segments WHERE snapshot_id = %s", (snapshot_id,))
        list_base(conn, snapshot_id, segment_id)
        conn.execute("SELECT sitekb.snapshot_views(%s)", (snapshot_id,))
        conn.execute("""UPDATE sitekb.snapshots
                        SET counts = counts || jsonb_build_object('segments', 1, 'tombstones', 0)
                        WHERE snapshot_id = %s""", (snapshot_id,))
    swapped = time.monotonic()
    dropped = drop_unreferenced(conn)
    return {**result, "compacted": True, "segment_id": segment_id, "rows": rows,
            "build_seconds": round(built - started, 3), "swap_seconds": round(swapped - built, 3),
            "dropped_segments": dropped}


def _index_memory_mb(rows: int, dimensions: int) -> int:
    need = rows * (dimensions * 4 + 300) * 1.3 / 2**20
    return int(min(2048, max(64, need)))
