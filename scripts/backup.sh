#!/usr/bin/env bash
# Backups of the live stack, from the host: drives the `backup` service of compose/live.yml, which runs
# backup/service.sh with the PostgreSQL image's pg_dump/pg_restore.
#
#   scripts/backup.sh now                      back up now: a dump and a base backup (also on BACKUP_SCHEDULE)
#   scripts/backup.sh list                     the dumps (name, age, size) and the point-in-time recovery window
#   scripts/backup.sh verify [NAME|newest]     restore into a scratch database, print its row counts, drop it;
#                                              live data is not touched
#   scripts/backup.sh restore [NAME|newest]    stop app and tasks, restore into a fresh database, migrate it,
#                                              swap it in by rename (the old one stays as <db>_before_restore),
#                                              start app and tasks again and wait until they are healthy
#   scripts/backup.sh restore --to 'UTC TIME'  the same with the database as it was at that moment (a base backup
#                                              and the archived WAL replayed up to it), e.g. '2026-12-08 14:05:00'
#   scripts/backup.sh restore --latest         the same as late as the archive goes: after the database volume
#                                              was lost, the lost database's last streamed write
#   scripts/backup.sh fetch                    copy the backups from the off-host remote into the backup volume
#                                              (a new host; COMPOSE_PROFILES=offsite), then restore as above
#
# Refuses (one line, exit 1) a missing file, a file that is not a complete PostgreSQL custom-format dump, a time
# outside the recoverable window, and a backup from a newer schema than this version's `app migrate` knows; live
# data is unchanged then.
# Environment: COMPOSE_FILE (default compose/live.yml), COMPOSE_PROJECT_NAME, APP_VERSION and the other variables
# of compose/live.yml, as for `docker compose up`; RESTORE_WAIT, seconds app and tasks may take to become healthy
# again after a restore (default 120).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
compose_file=${COMPOSE_FILE:-$repo/compose/live.yml}
root=/var/lib/postgresql   # where the backup service keeps the files (its volume)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "backup: $*" >&2; exit 1; }
dc() { docker compose -f "$compose_file" "$@"; }
# shellcheck source=scripts/compose-status.sh
. "$(dirname "${BASH_SOURCE[0]}")/compose-status.sh"
# backup/service.sh in the running backup service; its own refusals ("backup: ERROR: ...") pass through.
in_backup() { service_exec backup sh /etc/backup/service.sh "$@"; }

human_age() {
    local s=$1
    if [ "$s" -lt 120 ]; then echo "${s}s"
    elif [ "$s" -lt 7200 ]; then echo "$((s / 60))m"
    elif [ "$s" -lt 172800 ]; then echo "$((s / 3600))h"
    else echo "$((s / 86400))d"; fi
}

resolve() { # NAME|newest|"" -> a file name in the backup volume
    local name=${1:-newest}
    if [ "$name" = newest ]; then
        name=$(in_backup newest) || exit 1
        [ -n "$name" ] || die "there is no backup yet (scripts/backup.sh now)"
    fi
    case $name in */*|"") die "give a backup's name as 'list' prints it, not a path: $name" ;; esac
    echo "$name"
}

cmd_list() {
    local out name age size archive first last state
    out=$(in_backup list) || exit 1
    if [ -z "$out" ]; then
        echo "no dumps yet"
    else
        printf '%-50s %8s %12s\n' NAME AGE BYTES
        while read -r name age size; do
            printf '%-50s %8s %12s\n' "$name" "$(human_age "$age")" "$size"
        done <<<"$out"
    fi
    out=$(in_backup windows) || exit 1
    [ -n "$out" ] || { echo "no point-in-time recovery window yet (no base backup)"; return; }
    echo "point-in-time recovery (restore --to 'UTC TIME', restore --latest):"
    while read -r archive first last state; do
        printf '  from %s to %s UTC  %s (database system %s)\n' "$(date -u -d "@$first" '+%F %T')" \
            "$(date -u -d "@$last" '+%F %T')" "$([ "$state" = running ] && echo "streaming now" || echo "ended")" "$archive"
    done <<<"$out"
}

cmd_fetch() {
    local out
    out=$(one_off offsite fetch) || die "fetch failed: $(tail -n 1 <<<"$out")"
    echo "$out" | tail -n 1
}

cmd_verify() {
    local name db scratch
    name=$(resolve "${1:-}")
    db=$(in_backup dbname)
    scratch="${db}_verify_$$"
    in_backup restore-into "$root/$name" "$scratch" >/dev/null || exit 1
    echo "verify: $name restores; rows per table:"
    in_backup counts "$scratch" | sed 's/^/  /' || { in_backup drop "$scratch"; exit 1; }
    in_backup drop "$scratch"
}

cmd_restore() {
    local name db fresh out target=""
    case ${1:-} in
        --latest) target=latest; name="the latest moment" ;;
        --to) [ -n "${2:-}" ] || die "restore --to needs a UTC time, e.g. '2026-12-08 14:05:00'"
              target=$2; name=$2 ;;
        -*) die "unknown option '$1' (scripts/backup.sh --help)" ;;
        *) name=$(resolve "${1:-}") ;;
    esac
    db=$(in_backup dbname)
    fresh="${db}_restore"
    # Before anything stops: a file that cannot be restored, or a moment outside the window, changes nothing.
    if [ -n "$target" ]; then
        out=$(in_backup plan "$target") || exit 1
        echo "restore: $name from base backup $(cut -d' ' -f2 <<<"$out") and the WAL after it"
    else
        in_backup verify-file "$root/$name" >/dev/null || exit 1
    fi
    echo "restore: stopping app and tasks"
    out=$(dc stop app tasks 2>&1) || die "could not stop app and tasks: $(tail -n 1 <<<"$out")"
    # Compose's progress lines go to stderr; only a failure is worth a line there.
    start_again() {
        local started
        echo "restore: starting app and tasks"
        # `up --no-recreate` starts the stopped replicas as they were; --wait: "is live" means they are healthy.
        started=$(dc up --detach --no-deps --no-recreate --wait --wait-timeout "${RESTORE_WAIT:-120}" app tasks 2>&1) ||
            echo "backup: app and tasks did not become healthy: $(tail -n 1 <<<"$started")" >&2
    }
    in_backup drop "$fresh"
    if [ -n "$target" ]; then
        if ! in_backup recover-into "$target" "$fresh"; then in_backup drop "$fresh"; start_again; exit 1; fi
    elif ! in_backup restore-into "$root/$name" "$fresh"; then start_again; exit 1; fi
    # The code's migrations on the restored schema; sqlx refuses a database that has a migration it does not know.
    if ! out=$(one_off -e POSTGRES_DB="$fresh" migrate migrate --refuse-newer 2>&1); then
        in_backup drop "$fresh"
        start_again
        if grep -q "missing in the resolved migrations" <<<"$out"; then
            die "refused: $name is from a newer schema than this version knows (live database unchanged)"
        fi
        die "refused: app migrate failed on the restored $name (live database unchanged): $(tail -n 1 <<<"$out")"
    fi
    if ! in_backup swap "$fresh"; then start_again; exit 1; fi
    start_again
    echo "restore: $name is live"
}

case ${1:-} in
    -h|--help|help) usage ;;
    now) in_backup now ;;
    list) cmd_list ;;
    verify) cmd_verify "${2:-}" ;;
    restore) shift; cmd_restore "$@" ;;
    fetch) cmd_fetch ;;
    "") usage >&2; exit 2 ;;
    *) echo "backup: unknown command '$1' (scripts/backup.sh --help)" >&2; exit 2 ;;
esac
