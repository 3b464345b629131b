-- The locks sitekb's writers serialise with (sitekb/store/locks.py): one row per
-- key ('runs/<site>', 'aliases/<site>', 'schema'), locked FOR UPDATE for the
-- length of the writer's transaction. They used to be advisory locks, which
-- Postgres opens to every role: the reader role (or anyone with a password)
-- could take sitekb's keys and stall a publish, a run start or a migration.
-- A row of a table in schema sitekb can only be locked by a role that may
-- update it, and sitekb_reader has no USAGE on the schema.

CREATE TABLE sitekb.locks (
    key         text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
