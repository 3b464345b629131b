-- Airflow's metadata database (also the Celery result backend), kept apart
-- from the sitekb data: its own role and database on the same Postgres server.
-- The postgres image runs this once, as the POSTGRES_USER superuser, when the
-- data volume is first initialised; on an existing volume run it by hand.
CREATE ROLE airflow WITH LOGIN PASSWORD 'airflow';
CREATE DATABASE airflow OWNER airflow;
