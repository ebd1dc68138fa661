-- Runs once, on the first start of an empty PostgreSQL data directory (docker-entrypoint-initdb.d),
-- as POSTGRES_USER. One database per owning service; each service applies its own migrations at start.
-- Idempotent (\gexec only creates what is missing), so it can also be run by hand:
--   psql "$ADP_DATABASE_URL" -f deploy/postgres/init-databases.sql
SELECT format('CREATE DATABASE %I', db)
FROM unnest(ARRAY['gateway', 'dialogue', 'cost', 'alerts']) AS db
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = db)
\gexec
