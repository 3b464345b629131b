-- Why these passages: where each chunk of an answer came from, as one JSON object per chunk id
-- (in the order given), for a frontend's "why this answer" and `sitekb explain`.
--
-- The snapshot is the site's alias (default production) or a pinned id, as
-- sitekb.readable_snapshot allows (what sitekb_api.search reads; sitekb/explain.py pins the
-- snapshot its search answered from). For each chunk: the passage (url, title, heading path,
-- content), the page's fetch (when, ETag, Last-Modified, body hash), the document (content
-- hash, language, dates), what the extractor cut (nosnippet sections, hidden elements,
-- boilerplate blocks and share), the chunker, tokenizer and extractor versions, the embedding
-- model, the snapshot (when built, each publish: alias, when, by whom, why), the quality
-- checks (the document's measured values; the checks it failed and the approval that let it
-- through, if any; the snapshot's batch gate and golden questions), a content owner's
-- correction of its text if it has one, and the page's history across the snapshots a
-- frontend may read (which hold it, at which content hash; first seen, last changed).
-- Everything comes from the snapshot's own run: no raw page body, nothing of a snapshot that
-- was never published. A chunk id the snapshot does not hold raises no_data_found (P0002).
CREATE OR REPLACE FUNCTION sitekb_api.explain(
    site         text,
    chunk_ids    text[],
    alias        text   DEFAULT 'production',
    snapshot_id  bigint DEFAULT NULL
) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_snap    sitekb_api.resolved_snapshot := sitekb_api.resolve_snapshot($1, $3, $4);
    v_ids     text[] := $2;
    v_missing text[];
BEGIN
    IF v_ids IS NULL OR cardinality(v_ids) < 1 OR cardinality(v_ids) > 100 THEN
        RAISE EXCEPTION 'name between 1 and 100 chunk ids (got %)', coalesce(cardinality(v_ids), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT array_agg(w.id ORDER BY w.ord) FROM unnest($1::text[]) WITH ORDINALITY AS w(id, ord) '
                   'WHERE NOT EXISTS (SELECT 1 FROM %I.%I c WHERE c.chunk_id = w.id)', 'sitekb_snapshots',
                   v_snap.table_name)
        INTO v_missing USING v_ids;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'snapshot % of site % has no chunk %', v_snap.snapshot_id, v_snap.site,
            array_to_string(v_missing, ', ')
            USING ERRCODE = 'no_data_found',
                  HINT = 'chunk ids belong to one snapshot: take them from a search of the same snapshot '
                         '(sitekb_api.search returns chunk_id and snapshot_id)';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH wanted AS (SELECT w.id, w.ord FROM unnest($1::text[]) WITH ORDINALITY AS w(id, ord)),
             snap AS (SELECT * FROM sitekb.snapshots WHERE snapshot_id = $2),
             pubs AS (
                 SELECT coalesce(jsonb_agg(jsonb_build_object(
                            'alias', e.alias, 'decision', e.decision, 'at', e.moved_at, 'by', e.actor,
                            'reason', e.reason, 'from_snapshot', e.from_snapshot) ORDER BY e.moved_at, e.id),
                            '[]'::jsonb) AS events
                 FROM sitekb.alias_events e
                 WHERE e.to_snapshot = $2 AND e.decision <> 'rejected'),
             live AS (
                 SELECT coalesce(array_agg(a.alias ORDER BY a.alias), '{}') AS aliases
                 FROM sitekb.aliases a WHERE a.snapshot_id = $2)
        SELECT jsonb_build_object(
            'chunk_id', c.chunk_id, 'url', c.url, 'title', c.title, 'heading_path', to_jsonb(c.heading_path),
            'content', c.content,
            'page', jsonb_build_object(
                'url', c.url, 'canonical_url', d.canonical_url, 'title', d.title, 'author', d.author,
                'published', d.published, 'modified', d.modified, 'language', c.language,
                'fetched_at', d.fetched_at, 'etag', d.etag, 'last_modified', d.last_modified,
                'page_hash', d.page_hash, 'content_hash', d.content_hash),
            'extraction', jsonb_build_object(
                'extractor_version', s.extractor_version,
                'nosnippet_removed', d.extraction -> 'nosnippet_removed',
                'hidden_removed', d.extraction -> 'hidden_removed',
                'boilerplate_blocks', d.extraction -> 'boilerplate_blocks',
                'fallbacks', coalesce(d.extraction -> 'fallbacks', '[]'::jsonb),
                'visible_words', d.visible_words, 'words', d.word_count,
                'boilerplate_share', coalesce(d.measures -> 'boilerplate_share',
                    CASE WHEN d.visible_words > 0 THEN to_jsonb(round(greatest(0, least(1,
                        1 - d.word_count::numeric / d.visible_words)), 4)) END)),
            'chunking', jsonb_build_object(
                'chunker_version', s.chunker_version, 'tokenizer', s.tokenizer, 'seq', c.seq,
                'token_count', c.token_count),
            'embedding', jsonb_build_object(
                'provider', s.embedding_provider, 'model', s.embedding_model, 'dimensions', s.dimensions),
            'snapshot', jsonb_build_object(
                'snapshot_id', s.snapshot_id, 'state', s.state, 'created_at', s.created_at,
                'built_at', s.built_at, 'config_hash', s.config_hash, 'aliases', to_jsonb(live.aliases),
                'publications', pubs.events),
            'quality', jsonb_build_object(
                'status', d.status,
                'measures', coalesce(d.measures - 'flags', '{}'::jsonb),
                'failed_checks', coalesce(d.failures, '[]'::jsonb),
                'approval', CASE WHEN ap.id IS NOT NULL THEN jsonb_build_object(
                    'by', ap.approved_by, 'at', ap.approved_at, 'reason', ap.reason,
                    'content_hash', ap.content_hash) END,
                'gate', jsonb_build_object(
                    'passed', s.quality #> '{batch,success}',
                    'checks', coalesce((SELECT jsonb_agg(jsonb_build_object('check', x ->> 'check',
                                                                            'success', x -> 'success'))
                                        FROM jsonb_array_elements(
                                            CASE WHEN jsonb_typeof(s.quality #> '{batch,checks}') = 'array'
                                                 THEN s.quality #> '{batch,checks}' ELSE '[]'::jsonb END) x),
                                       '[]'::jsonb),
                    'golden', CASE WHEN s.quality ? 'golden' THEN jsonb_build_object(
                        'hits', s.quality #> '{golden,hits}', 'asked', s.quality #> '{golden,asked}') END)),
            'correction', CASE WHEN k.id IS NOT NULL THEN jsonb_build_object(
                'id', k.id, 'by', k.added_by, 'at', k.added_at, 'reason', k.reason, 'status', k.status,
                'extracted_hash', d.source_hash) END,
            'history', hist.history)
        FROM wanted w
        CROSS JOIN snap s CROSS JOIN pubs CROSS JOIN live
        JOIN %I.%I c ON c.chunk_id = w.id
        LEFT JOIN sitekb.documents d ON d.run_id = s.run_id AND d.url = c.url
        LEFT JOIN sitekb.quarantine_approvals ap ON ap.id = d.approval_id
        LEFT JOIN sitekb.corrections k ON k.id = d.correction_id
        LEFT JOIN LATERAL (
            WITH h AS (
                SELECT hs.snapshot_id, hs.state, hs.created_at, hd.content_hash, hd.page_hash, hd.fetched_at,
                       hd.correction_id IS NOT NULL AS corrected,
                       (SELECT min(e.moved_at) FROM sitekb.alias_events e
                        WHERE e.to_snapshot = hs.snapshot_id AND e.decision <> 'rejected') AS published_at
                FROM sitekb.snapshots hs
                JOIN sitekb.documents hd ON hd.run_id = hs.run_id AND hd.url = c.url AND hd.status = 'accepted'
                WHERE hs.site = s.site AND hs.table_name IS NOT NULL
                  AND (hs.state IN ('published', 'retired') OR hs.snapshot_id = s.snapshot_id))
            SELECT jsonb_build_object(
                'snapshots', coalesce((SELECT jsonb_agg(to_jsonb(h) ORDER BY h.snapshot_id) FROM h), '[]'::jsonb),
                'first_seen', (SELECT jsonb_build_object('snapshot_id', h.snapshot_id, 'at', h.created_at)
                               FROM h ORDER BY h.snapshot_id LIMIT 1),
                'last_changed', (SELECT jsonb_build_object('snapshot_id', h.snapshot_id, 'at', h.created_at)
                                 FROM h WHERE h.snapshot_id <= s.snapshot_id
                                   AND h.snapshot_id > coalesce((SELECT max(o.snapshot_id) FROM h o
                                                                 WHERE o.snapshot_id < s.snapshot_id
                                                                   AND o.content_hash IS DISTINCT FROM d.content_hash),
                                                                0)
                                 ORDER BY h.snapshot_id LIMIT 1)) AS history
        ) hist ON true
        ORDER BY w.ord
    $q$, 'sitekb_snapshots', v_snap.table_name)
    USING v_ids, v_snap.snapshot_id;
END
$fn$;
