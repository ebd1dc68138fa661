#!/usr/bin/env bash
# pg_dump of each service database (custom format) into a timestamped folder.
#
#   ADP_DATABASE_URL=postgresql://adp:...@127.0.0.1:5432/postgres scripts/backup/pg-backup.sh [OUT_DIR] [DB...]
#
# DB defaults to the four service databases (gateway dialogue cost alerts). Prints the folder it wrote.
# `adp backup` does the same plus the JetStream streams; this script needs only bash and pg_dump.
set -euo pipefail

server_dsn="${ADP_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
out_dir="${1:-backups}"
shift || true
if [ "$#" -gt 0 ]; then dbs=("$@"); else dbs=(gateway dialogue cost alerts); fi

# replace the database part of the server DSN (keeps user, password, host, port and query)
dsn_for() {
  local base="${server_dsn%%\?*}" query=""
  [[ "$server_dsn" == *\?* ]] && query="?${server_dsn#*\?}"
  printf '%s/%s%s' "${base%/*}" "$1" "$query"
}

folder="$out_dir/pg-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$folder"
for db in "${dbs[@]}"; do
  pg_dump --format=custom --no-owner --no-acl --file="$folder/db-$db.dump" --dbname="$(dsn_for "$db")"
  echo "dumped $db ($(wc -c <"$folder/db-$db.dump") bytes)" >&2
done
echo "$folder"
