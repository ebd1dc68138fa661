#!/usr/bin/env bash
# Full backup: every service database and every JetStream stream / KV bucket of the prefix.
# Uses the `adp` CLI (ADP_NATS_URL, ADP_SUBJECT_PREFIX, ADP_DATABASE_URL from the environment).
#
#   scripts/backup/backup-all.sh [OUT_DIR]            # cron: 15 2 * * * /app/scripts/backup/backup-all.sh /backups
#   docker compose run --rm ops adp backup --out /backups
#
# Keeps the newest ADP_BACKUP_KEEP (default 14) backup folders in OUT_DIR.
set -euo pipefail
out_dir="${1:-${ADP_BACKUP_DIR:-backups}}"
keep="${ADP_BACKUP_KEEP:-14}"
adp="${ADP_CLI:-adp}"
"$adp" backup --out "$out_dir"
# prune old backups (names sort by time)
ls -1d "$out_dir"/adp-backup-* 2>/dev/null | sort | head -n -"$keep" | while read -r old; do
  rm -rf -- "$old"
  echo "pruned $old" >&2
done
