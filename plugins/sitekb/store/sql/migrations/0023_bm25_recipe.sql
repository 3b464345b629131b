-- The BM25 recipe of a snapshot's postings (sitekb.bm25_recipe: how sitekb.bm25_terms
-- counted its chunks' terms). Snapshots with statistics before this migration were
-- built with recipe 1; a refresh builds on a snapshot of the current recipe only, so
-- a site's first build after the recipe changes is a full one.
ALTER TABLE sitekb.snapshots ADD COLUMN bm25_recipe smallint;
UPDATE sitekb.snapshots SET bm25_recipe = 1 WHERE corpus_chunks IS NOT NULL;
