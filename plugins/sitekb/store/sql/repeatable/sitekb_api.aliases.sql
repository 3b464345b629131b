-- Where each alias of each site points now.
-- CREATE OR REPLACE keeps the view (and its grants) while it is replaced; a change that
-- removes or retypes a column needs a migration that drops it first.
CREATE OR REPLACE VIEW sitekb_api.aliases AS
SELECT a.site, a.alias, a.snapshot_id, a.updated_at FROM sitekb.aliases a;
