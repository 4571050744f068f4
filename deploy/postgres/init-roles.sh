#!/bin/sh
# First start of the database (docker-entrypoint-initdb.d): the login roles of a deployment.
# Services log in as a member of coldtrail_app, Grafana as a member of coldtrail_readonly;
# the migrations (run as the owner, POSTGRES_USER) grant those two roles what they may do.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_user="${APP_DB_USER:-coldtrail}" -v app_pw="$APP_DB_PASSWORD" \
    -v ro_user="${GRAFANA_DB_USER:-grafana}" -v ro_pw="$GRAFANA_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE coldtrail_app NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coldtrail_app') \gexec
SELECT 'CREATE ROLE coldtrail_readonly NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coldtrail_readonly') \gexec
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_pw' IN ROLE coldtrail_app;
CREATE ROLE :"ro_user" LOGIN PASSWORD :'ro_pw' IN ROLE coldtrail_readonly;
-- Grafana runs whatever SQL a dashboard editor types: nothing but reading, and not for long.
ALTER ROLE :"ro_user" SET default_transaction_read_only = on;
ALTER ROLE :"ro_user" SET statement_timeout = '30s';
SQL
