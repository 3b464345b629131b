-- Who may use what, applied last whenever a migration or a repeatable script ran
-- (sitekb/store/schema.py): a function or view that was dropped and created again
-- has lost its grants.
--
-- A frontend logs in as sitekb_reader, a LOGIN role without a password (nobody
-- can log in as it until the operator runs ALTER ROLE sitekb_reader PASSWORD '...').
-- It may use the schema sitekb_api only: the SECURITY DEFINER functions and the
-- owner-privileged views there show published snapshots and nothing else (never
-- building, validated-only or rejected ones, never raw pages, documents or the
-- quarantine), and it cannot write anything. It has no USAGE on schema sitekb,
-- nor on the per-snapshot schemas sitekb_snap_<id>.

REVOKE ALL ON SCHEMA sitekb_api FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sitekb_api FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sitekb FROM PUBLIC;

-- Roles are cluster-wide: created once, granted per database.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitekb_reader') THEN
        BEGIN
            CREATE ROLE sitekb_reader LOGIN NOINHERIT NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'sitekb: cannot create role sitekb_reader (needs CREATEROLE). Ask a DBA to run '
                          '"CREATE ROLE sitekb_reader LOGIN" and then `sitekb db migrate` again';
            RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA sitekb_api TO sitekb_reader;
    GRANT SELECT ON sitekb_api.snapshots, sitekb_api.aliases TO sitekb_reader;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sitekb_api TO sitekb_reader;
    -- The vector type is needed to pass a query embedding.
    GRANT USAGE ON SCHEMA @extschema:vector@ TO sitekb_reader;
    -- A frontend (or whoever holds its password) cannot exhaust the server: bounded connections, no
    -- query longer than a search needs, no waiting on a lock, no idle transaction pinning old rows.
    BEGIN
        ALTER ROLE sitekb_reader CONNECTION LIMIT 64;
        ALTER ROLE sitekb_reader SET statement_timeout = '15s';
        ALTER ROLE sitekb_reader SET lock_timeout = '1s';
        ALTER ROLE sitekb_reader SET idle_in_transaction_session_timeout = '60s';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'sitekb: cannot set the limits of role sitekb_reader (needs CREATEROLE). Ask a DBA to run '
                      '"ALTER ROLE sitekb_reader CONNECTION LIMIT 64" and to set its statement_timeout 15s, '
                      'lock_timeout 1s and idle_in_transaction_session_timeout 60s';
    END;
END
$do$;

-- Large objects are the one place a read-only role can still write: Postgres lets every role create
-- them (lo_create and friends are granted to PUBLIC), so a frontend's password could fill the disk.
-- Creating them is revoked from PUBLIC in this database (sitekb never uses them). Only the functions'
-- owner (a superuser) may do that; without one, a DBA should run the same REVOKE.
DO $do$
BEGIN
    REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid),
                               pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text),
                               pg_catalog.lo_import(text, oid)
        FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'sitekb: cannot stop sitekb_reader from creating large objects (needs a superuser). Ask a DBA '
                  'to run "REVOKE EXECUTE ON FUNCTION lo_creat(integer), lo_create(oid), lo_from_bytea(oid, bytea) '
                  'FROM PUBLIC" in this database';
END
$do$;
