#!/usr/bin/env bash
# Full restore from a folder made by backup-all.sh / `adp backup`. Stop the services first
# (docker compose stop gateway dialogue llm-router cost alerts), restore, then start them again.
#
#   scripts/backup/restore-all.sh backups/adp-backup-20260101T021500Z-ab12 [--replace]
set -euo pipefail
if [ "$#" -lt 1 ]; then
  echo "usage: $0 BACKUP_FOLDER [--replace]" >&2
  exit 2
fi
adp="${ADP_CLI:-adp}"
exec "$adp" restore "$@"
