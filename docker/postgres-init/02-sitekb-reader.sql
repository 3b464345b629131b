-- The read-only role the query API (`sitekb serve` in docker-compose.yml)
-- connects as, and the only database credentials that service holds (the
-- sitekb-migrate service migrates as the owner before it starts). sitekb's migrations create it without a password and grant it
-- the sitekb_api schema only (plugins/sitekb/store/sql/privileges.sql); created
-- here first, with the same attributes, it also gets a password so it can log
-- in over the compose network. Postgres publishes no host port. Run once, like
-- 01-airflow-db.sql; on an existing volume run it by hand.
CREATE ROLE sitekb_reader WITH LOGIN NOINHERIT NOCREATEDB NOCREATEROLE PASSWORD 'sitekb_reader';
