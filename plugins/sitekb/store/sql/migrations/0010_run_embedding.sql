-- The embedder a run chose, recorded when it starts: every stage and every
-- task of the run uses this one (provider, model, dimensions, tokenizer,
-- server, key variable), and its snapshot records the same.
ALTER TABLE sitekb.runs ADD COLUMN embedding jsonb NOT NULL DEFAULT '{}';

-- One query path: sitekb_api.search ranks every mode itself (../repeatable/),
-- so the per-table helpers of 0.1.0 go.
DROP FUNCTION IF EXISTS sitekb.search_table(text, text, text, vector, integer, text, text[], text, date, date, integer);
DROP FUNCTION IF EXISTS sitekb.nearest_sql(text, text, text, text);
