-- The newest migration this database has (readiness checks).
CREATE OR REPLACE FUNCTION sitekb_api.schema_version() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT max(version) FROM public.sitekb_schema_migrations $fn$;
