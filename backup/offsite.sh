#!/bin/sh
# Off-host copies of the backups: run by the `offsite` service of compose/live.yml (rclone's image, only with
# COMPOSE_PROFILES=offsite) and by `scripts/backup.sh fetch`. POSIX sh; needs rclone, cat, cut, date, mv.
#
#   offsite.sh loop    copy every BACKUP_OFFSITE_EVERY seconds (default 10); the remote's retention once an hour
#   offsite.sh once    one copy
#   offsite.sh prune   the remote's retention now
#   offsite.sh fetch   copy the remote's backups into the backup volume (restoring on a new host)
#   offsite.sh check   healthcheck: the last copy succeeded
#
# What is copied: finished dumps, finished base backups and complete (gzipped) WAL segments, never a file still
# being written (those have hidden names or end in .partial). The remote keeps BACKUP_REMOTE_KEEP_DAYS days
# (default 30) of them, deleted there by age, and only while a base backup younger than that exists here, so a
# stopped schedule never empties the remote.
#
# The result goes to $BACKUP_ROOT/.offsite-status, which the backup service reads for its healthcheck and for
# /readyz: "ok LAST_OK" or "failing LAST_OK MESSAGE" (LAST_OK: the last success, seconds since the epoch, 0: none).
#
# Environment: BACKUP_REMOTE (rclone remote:path, required), RCLONE_CONFIG (the remote's configuration: the
# rclone_conf secret), BACKUP_ROOT (default /var/lib/postgresql), BACKUP_OFFSITE_EVERY, BACKUP_REMOTE_KEEP_DAYS.
set -eu

ROOT=${BACKUP_ROOT:-/var/lib/postgresql}
STATUS=$ROOT/.offsite-status
REMOTE=${BACKUP_REMOTE:-}

die() { echo "offsite: ERROR: $*" >&2; exit 1; }
info() { echo "offsite: $*"; }

number() { # NAME DEFAULT
    v=""
    eval "v=\${$1:-$2}"
    case $v in *[!0-9]*|"") die "$1 must be a whole number, not '$v'" ;; esac
    [ "$v" -gt 0 ] || die "$1 must be > 0"
    echo "$v"
}

# Timeouts so that an unreachable remote fails a pass within a minute instead of hanging it.
rclone_files() { # rclone COMMAND with the filters of what is a finished backup file
    cmd=$1; shift
    rclone "$cmd" "$@" --contimeout 10s --timeout 30s --retries 1 --low-level-retries 2 \
        --filter '+ /backup-*.dump' --filter '+ /pitr/*/wal/*.gz' --filter '+ /pitr/*/wal/*.history' \
        --filter '+ /pitr/*/base-*/**' --filter '- **'
}

last_ok() { [ -f "$STATUS" ] && cut -d' ' -f2 "$STATUS" || echo 0; }

record() { # ok|failing [MESSAGE]
    if [ "$1" = ok ]; then line="ok $(date -u +%s)"; else line="failing $(last_ok) $2"; fi
    echo "$line" > "$STATUS.tmp" && mv "$STATUS.tmp" "$STATUS"
}

once() {
    [ -n "$REMOTE" ] || die "BACKUP_REMOTE is not set (rclone remote:path, env/live.env)"
    before=$(cut -d' ' -f1 "$STATUS" 2>/dev/null || echo none)
    if out=$(rclone_files copy "$ROOT" "$REMOTE" 2>&1); then
        record ok
        [ "$before" = ok ] || info "copies to $REMOTE succeed"
    else
        msg=$(echo "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | sed 's|^[0-9/]* [0-9:]* ||' | cut -c1-300)
        record failing "$msg"
        echo "offsite: ERROR: copying to $REMOTE failed: $msg" >&2
        return 1
    fi
}

retention() {
    [ -n "$REMOTE" ] || die "BACKUP_REMOTE is not set (rclone remote:path, env/live.env)"
    days=$(number BACKUP_REMOTE_KEEP_DAYS 30)
    young=$(find "$ROOT/pitr" -path '*/base-*/done' -mtime -"$days" 2>/dev/null | head -n 1)
    [ -n "$young" ] || { info "no base backup younger than ${days} days here: the remote's old copies stay"; return 0; }
    out=$(rclone_files delete "$REMOTE" --min-age "${days}d" --rmdirs 2>&1) || echo "offsite: ERROR: retention on $REMOTE failed: $out" >&2
    return 0
}

loop() {
    every=$(number BACKUP_OFFSITE_EVERY 10); number BACKUP_REMOTE_KEEP_DAYS 30 >/dev/null
    [ -n "$REMOTE" ] || die "BACKUP_REMOTE is not set (rclone remote:path, env/live.env)"
    info "copying $ROOT to $REMOTE every ${every}s, keeping ${BACKUP_REMOTE_KEEP_DAYS:-30} days there"
    trap 'exit 0' TERM INT
    pruned=0
    while :; do
        if once && [ $(($(date -u +%s) - pruned)) -ge 3600 ]; then retention; pruned=$(date -u +%s); fi
        sleep "$every" & wait $! || true
    done
}

check() {
    [ -f "$STATUS" ] || die "no copy attempted yet"
    case $(cut -d' ' -f1 "$STATUS") in
        ok) echo "offsite: last copy ok" ;;
        *) die "the last copy failed: $(cut -d' ' -f3- "$STATUS")" ;;
    esac
}

fetch() {
    [ -n "$REMOTE" ] || die "BACKUP_REMOTE is not set (rclone remote:path, env/live.env)"
    out=$(rclone_files copy "$REMOTE" "$ROOT" 2>&1) || die "fetching from $REMOTE failed: $(echo "$out" | tail -n 1)"
    info "fetched the backups of $REMOTE into $ROOT"
}

case ${1:-} in
    loop) loop ;;
    once) once ;;
    prune) retention ;;
    fetch) fetch ;;
    check) check ;;
    *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
