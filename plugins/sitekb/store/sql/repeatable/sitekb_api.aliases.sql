-- Where each alias of each site points now.
DROP VIEW IF EXISTS sitekb_api.aliases;
CREATE VIEW sitekb_api.aliases AS
SELECT a.site, a.alias, a.snapshot_id, a.updated_at FROM sitekb.aliases a;
