#!/usr/bin/env bash
# Restore one database from a dump made by pg-backup.sh or `adp backup` (db-<name>.dump).
#
#   ADP_DATABASE_URL=postgresql://adp:...@127.0.0.1:5432/postgres scripts/backup/pg-restore.sh DUMP_FILE DB
#
# Creates DB when missing, then replaces its objects with the dump's in one transaction (all or nothing).
# Stop the service that owns DB first (docs/operations.md, "Database recovery").
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 DUMP_FILE DATABASE" >&2
  exit 2
fi
dump="$1"
db="$2"
server_dsn="${ADP_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
[[ "$db" =~ ^[A-Za-z0-9_]+$ ]] || { echo "invalid database name: $db" >&2; exit 2; }

dsn_for() {
  local base="${server_dsn%%\?*}" query=""
  [[ "$server_dsn" == *\?* ]] && query="?${server_dsn#*\?}"
  printf '%s/%s%s' "${base%/*}" "$1" "$query"
}

exists="$(psql --no-psqlrc -tA --dbname="$(dsn_for postgres)" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")"
if [ "$exists" != "1" ]; then
  psql --no-psqlrc -q --dbname="$(dsn_for postgres)" -c "CREATE DATABASE \"$db\""
fi
pg_restore --clean --if-exists --no-owner --no-acl --single-transaction --exit-on-error \
  --dbname="$(dsn_for "$db")" "$dump"
echo "restored $db from $dump" >&2
