#!/bin/sh
# PostgreSQL backups of the live stack: run by the `backup` service of compose/live.yml (PostgreSQL image, so
# pg_dump and pg_restore match the server) and by scripts/backup.sh through `docker exec`.
# POSIX sh; needs pg_dump, pg_restore, psql, pg_basebackup, pg_receivewal, pg_ctl, postgres and awk, cat, cp, cut,
# date, dd, du, grep, gzip, head, ls, mkdir, mv, rm, sed, sleep, sort, tail, tar, touch, tr, wc. Notes: backup/README.md.
#
#   service.sh loop             back up whenever the newest backup is BACKUP_SCHEDULE old (the service's command),
#                               and stream WAL continuously beside it (wal.sh)
#   service.sh now              one backup: dump, check, rename, record in PostgreSQL; a base backup; prune
#   service.sh list             NAME AGE_SECONDS SIZE_BYTES, oldest first
#   service.sh newest           the newest backup's name
#   service.sh check            healthcheck: fails when the newest backup is older than BACKUP_MAX_AGE, WAL streaming
#                               lags more than BACKUP_MAX_LAG or the last off-host copy failed
#   service.sh prune            delete what BACKUP_KEEP does not keep (BACKUP_NOW fixes "now" for tests)
#   service.sh windows          the point-in-time recovery windows: ARCHIVE FIRST LAST running|ended
#   service.sh plan latest|TIME what a recovery to TIME would use, or the line refusing it
#   service.sh recover-into latest|TIME DATABASE  recover the database as it was at TIME into DATABASE (pitr.sh)
#   service.sh kept NAME...     print which of the given names BACKUP_KEEP keeps (no files touched)
#   service.sh verify-file FILE refuse anything that is not a complete PostgreSQL custom-format dump
#   service.sh restore-into FILE DATABASE  create DATABASE (must not exist) and restore FILE into it
#   service.sh counts DATABASE  row count of every table of DATABASE's public schema
#   service.sh drop DATABASE    drop a scratch database (never PGDATABASE)
#   service.sh swap DATABASE    rename DATABASE to PGDATABASE, keeping the old one as PGDATABASE_before_restore
#
# Environment: PGHOST/PGPORT/PGUSER/PGDATABASE or the stack's POSTGRES_HOST/PORT/USER/DB, PGPASSWORD or
# POSTGRES_PASSWORD_FILE (and POSTGRES_PASSWORD_PREVIOUS_FILE in a rotation); BACKUP_ROOT (default the volume,
# /var/lib/postgresql); APP_VERSION (in the file name); BACKUP_SCHEDULE (`daily` (default), `hourly` or seconds);
# BACKUP_MAX_AGE (seconds, default 1.5 x the schedule); BACKUP_KEEP (`<D>d<W>w`, default 7d4w: the newest backup
# of each of the last D UTC days and of each of the last W ISO weeks, and always the newest one; base backups too);
# BACKUP_WAL (on (default) or off: WAL streaming and base backups); BACKUP_MAX_LAG (seconds, default 30);
# BACKUP_WAL_SWITCH (seconds, default 60: the longest a segment stays open, so the off-host copy's delay).
set -eu
SELF=$0
LIB=$(dirname "$0")

: "${PGHOST:=${POSTGRES_HOST:-localhost}}" "${PGPORT:=${POSTGRES_PORT:-5432}}"
: "${PGUSER:=${POSTGRES_USER:-postgres}}" "${PGDATABASE:=${POSTGRES_DB:-$PGUSER}}"
export PGHOST PGPORT PGUSER PGDATABASE
password_from() { # FILE VARIABLE: PGPASSWORD from FILE (VARIABLE names it in the error)
    PGPASSWORD=$(cat "$1") || { echo "backup: ERROR: cannot read $2" >&2; exit 1; }
    export PGPASSWORD
}
from_files=""
if [ -z "${PGPASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password_from "$POSTGRES_PASSWORD_FILE" POSTGRES_PASSWORD_FILE
    from_files=1
fi
# Before each use of PostgreSQL: during a password rotation (POSTGRES_PASSWORD_PREVIOUS_FILE, set by
# scripts/swarm.sh rotate-db-password), the password of the two that PostgreSQL takes now.
login() {
    [ -n "$from_files" ] && [ -n "${POSTGRES_PASSWORD_PREVIOUS_FILE:-}" ] || return 0
    password_from "$POSTGRES_PASSWORD_FILE" POSTGRES_PASSWORD_FILE
    psql -X -q -At -c 'SELECT 1' >/dev/null 2>&1 || password_from "$POSTGRES_PASSWORD_PREVIOUS_FILE" POSTGRES_PASSWORD_PREVIOUS_FILE
}
BACKUP_ROOT=${BACKUP_ROOT:-/var/lib/postgresql}
APP_VERSION=${APP_VERSION:-unknown}
LOCK=${TMPDIR:-/tmp}/backup.lock

# Also releases what backup_now holds (explicit rather than an EXIT trap: backup_now also runs in a subshell).
die() {
    echo "backup: ERROR: $*" >&2
    release
    exit 1
}
release() {
    [ -z "${tmp:-}" ] || rm -f "$tmp"
    [ -z "${locked:-}" ] || rm -rf "$LOCK"   # not rmdir: minimal images may lack it
    locked=""
}
info() { echo "backup: $*"; }

schedule_seconds() {
    case ${BACKUP_SCHEDULE:-daily} in
        daily) echo 86400 ;;
        hourly) echo 3600 ;;
        *[!0-9]*|"") die "BACKUP_SCHEDULE must be daily, hourly or a number of seconds, not '${BACKUP_SCHEDULE}'" ;;
        *) [ "$BACKUP_SCHEDULE" -gt 0 ] || die "BACKUP_SCHEDULE must be > 0"; echo "$BACKUP_SCHEDULE" ;;
    esac
}

max_age() {
    case ${BACKUP_MAX_AGE:-} in
        "") s=$(schedule_seconds); echo $((s + s / 2)) ;;
        *[!0-9]*) die "BACKUP_MAX_AGE must be a number of seconds" ;;
        *) echo "$BACKUP_MAX_AGE" ;;
    esac
}

now() { echo "${BACKUP_NOW:-$(date -u +%s)}"; }

dec() { # strip leading zeros (shell arithmetic reads 08 as octal)
    n=$1
    while [ "${#n}" -gt 1 ] && [ "${n#0}" != "$n" ]; do n=${n#0}; done
    echo "$n"
}

# Seconds since the epoch of a backup's name backup-YYYYMMDDTHHMMSSZ-VERSION.dump or a base backup's
# base-YYYYMMDDTHHMMSSZ-VERSION; nothing for any other name.
# Plain arithmetic (days from the civil calendar), so no `date -d` dialect is needed.
name_epoch() {
    s=${1##*/}
    case $s in
        backup-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-*.dump) s=${s#backup-} ;;
        base-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-*) s=${s#base-} ;;
        *) return 0 ;;
    esac
    y=$(dec "$(echo "$s" | cut -c1-4)"); m=$(dec "$(echo "$s" | cut -c5-6)"); d=$(dec "$(echo "$s" | cut -c7-8)")
    hh=$(dec "$(echo "$s" | cut -c10-11)"); mm=$(dec "$(echo "$s" | cut -c12-13)"); ss=$(dec "$(echo "$s" | cut -c14-15)")
    [ "$m" -le 2 ] && y=$((y - 1))
    era=$((y / 400)); yoe=$((y - era * 400))
    if [ "$m" -gt 2 ]; then mp=$((m - 3)); else mp=$((m + 9)); fi
    doy=$(((153 * mp + 2) / 5 + d - 1))
    doe=$((yoe * 365 + yoe / 4 - yoe / 100 + doy))
    days=$((era * 146097 + doe - 719468))
    echo $((days * 86400 + hh * 3600 + mm * 60 + ss))
}

backups() { # names of the backups, oldest first (the names sort by time)
    for f in "$BACKUP_ROOT"/backup-*.dump; do
        [ -e "$f" ] || continue
        [ -n "$(name_epoch "$f")" ] && echo "${f##*/}"
    done
    return 0
}

newest() { backups | tail -n 1; }

keep_rule() { # sets keep_days, keep_weeks from BACKUP_KEEP
    rule=${BACKUP_KEEP:-7d4w}
    case $rule in
        *[0-9]d*[0-9]w) keep_days=${rule%%d*}; keep_weeks=${rule#*d}; keep_weeks=${keep_weeks%w} ;;
        *) die "BACKUP_KEEP must look like 7d4w (days, then weeks), not '$rule'" ;;
    esac
    case $keep_days$keep_weeks in *[!0-9]*) die "BACKUP_KEEP must look like 7d4w, not '$rule'" ;; esac
}

# The names (one per argument) BACKUP_KEEP keeps: the first one seen of each day in the last keep_days days and of
# each week in the last keep_weeks weeks, and the newest overall. Dumps are walked newest first (each day keeps its
# last dump); base backups oldest first (each day keeps its first: the WAL after it covers the rest of the day, so
# a second base backup on the same day adds nothing to the recoverable window).
kept() { keep_walk newest "$@"; }
kept_bases() { keep_walk oldest "$@"; }

keep_walk() { # newest|oldest NAME...
    keep_rule
    t=$(now); today=$((t / 86400)); this_week=$(((today + 3) / 7))   # 1970-01-01 was a Thursday: weeks start Monday
    seen_days=" "; seen_weeks=" "; order=$1; shift
    newest_name=""
    for name in $(printf '%s\n' "$@" | sort -r); do [ -z "$(name_epoch "$name")" ] || { newest_name=$name; break; }; done
    if [ "$order" = newest ]; then names=$(printf '%s\n' "$@" | sort -r); else names=$(printf '%s\n' "$@" | sort); fi
    for name in $names; do
        e=$(name_epoch "$name"); [ -n "$e" ] || continue
        day=$((e / 86400)); week=$(((day + 3) / 7)); keep=0
        [ "$name" = "$newest_name" ] && keep=1
        if [ $((today - day)) -lt "$keep_days" ]; then
            case $seen_days in *" $day "*) ;; *) seen_days="$seen_days$day "; keep=1 ;; esac
        fi
        if [ $((this_week - week)) -lt "$keep_weeks" ]; then
            case $seen_weeks in *" $week "*) ;; *) seen_weeks="$seen_weeks$week "; keep=1 ;; esac
        fi
        [ "$day" -gt "$today" ] && keep=1   # from the future (clock skew): never ours to judge
        [ "$keep" = 1 ] && echo "$name"
    done
    return 0
}

prune() {
    if wal_enabled; then prune_pitr; fi
    # shellcheck disable=SC2046
    keep=" $(kept $(backups) | tr '\n' ' ') "
    for name in $(backups); do
        case $keep in *" $name "*) ;; *) rm -f "$BACKUP_ROOT/$name"; info "pruned $name (BACKUP_KEEP=${BACKUP_KEEP:-7d4w})" ;; esac
    done
}

# pg_restore --list reads only the table of contents at the start of the file; reading every entry
# (--file=/dev/null) is what notices a truncated or corrupted data section.
verify_file() {
    f=$1
    [ -f "$f" ] || die "no such backup: $f"
    [ -s "$f" ] || die "$f is empty"
    [ "$(dd if="$f" bs=5 count=1 2>/dev/null)" = PGDMP ] \
        || die "$f is not a PostgreSQL custom-format dump (no PGDMP header)"
    out=$(pg_restore --list "$f" 2>&1 >/dev/null) || die "$f: pg_restore --list refused it: $(echo "$out" | tail -n 1)"
    out=$(pg_restore --file=/dev/null "$f" 2>&1) || die "$f is damaged or truncated: $(echo "$out" | tail -n 1)"
    return 0
}

backup_now() {
    tmp="" locked=""
    login
    mkdir "$LOCK" 2>/dev/null || die "another backup is running ($LOCK exists)"
    locked=1
    mkdir -p "$BACKUP_ROOT"
    version=$(echo "$APP_VERSION" | tr -c 'A-Za-z0-9._\n-' '_')
    name="backup-$(date -u +%Y%m%dT%H%M%SZ)-$version.dump"
    tmp="$BACKUP_ROOT/.partial-$name"
    [ ! -e "$BACKUP_ROOT/$name" ] || die "$name exists already (two backups in one second)"
    started=$(date -u +%s)
    # Custom format: compressed, restorable table by table; pg_dump reads one consistent snapshot.
    out=$(pg_dump --format=custom --no-owner --no-privileges --file="$tmp" 2>&1) \
        || die "pg_dump of $PGDATABASE on $PGHOST:$PGPORT failed: $out"
    ( verify_file "$tmp" ) || die "the new dump failed its check; kept nothing"
    mv "$tmp" "$BACKUP_ROOT/$name"
    tmp=""
    size=$(wc -c < "$BACKUP_ROOT/$name" | tr -d ' ')
    took=$(($(date -u +%s) - started))
    # The last success, for /readyz and the metrics (the dump above does not contain this row).
    out=$(printf '%s\n' "INSERT INTO backup_runs (file, size_bytes, app_version, seconds) VALUES (:'file', :'size', :'version', :'took');" \
        | psql -X -q -v ON_ERROR_STOP=1 -v file="$name" -v size="$size" -v version="$version" -v took="$took" 2>&1) \
        || die "$name written, but recording it in PostgreSQL failed: $out"
    info "wrote $name ($size bytes, ${took}s)"
    if wal_enabled; then ( base_backup ) || die "the dump $name is written, but the base backup failed"; fi
    prune
    release
}

# A base backup alone (the running archive has none yet: a first start, a new cluster, a broken stream).
base_now() {
    tmp="" locked=""
    login
    mkdir "$LOCK" 2>/dev/null || die "another backup is running ($LOCK exists)"
    locked=1
    base_backup
    prune_pitr
    release
}

# Wakes at least every 10 s: a new archive (see base_now) should not wait for the schedule.
loop() {
    every=$(schedule_seconds); max_age >/dev/null; keep_rule
    info "every ${every}s, keep ${BACKUP_KEEP:-7d4w}, into $BACKUP_ROOT"
    sleeper="" streamer="" retry_at=0
    if wal_enabled; then max_lag >/dev/null; switch_every >/dev/null; wal_loop & streamer=$!; fi
    trap 'info "stopping"; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; [ -z "$streamer" ] || { kill "$streamer"; wait "$streamer"; }; exit 0' TERM INT
    while :; do
        last=$(newest); wait_s=0
        if [ -n "$last" ]; then wait_s=$(($(name_epoch "$last") + every - $(now))); fi
        if [ "$wait_s" -le 0 ] && [ "$(now)" -ge "$retry_at" ]; then
            # A failure is logged (die's message) and retried after a minute; the healthcheck turns red meanwhile.
            if ( backup_now ); then wait_s=$every; else retry_at=$(($(now) + 60)); fi
        elif [ -n "$streamer" ] && archive=$(cat "$STATE.archive" 2>/dev/null) && [ -z "$(bases "$PITR/$archive")" ] \
            && [ "$(now)" -ge "$retry_at" ]; then
            ( base_now ) || retry_at=$(($(now) + 60))
        fi
        [ "$wait_s" -gt 0 ] && [ "$wait_s" -le 10 ] || wait_s=10
        sleep "$wait_s" & sleeper=$!
        wait "$sleeper" || true
    done
}

check() {
    last=$(newest)
    [ -n "$last" ] || die "no backup yet in $BACKUP_ROOT"
    age=$(($(now) - $(name_epoch "$last")))
    limit=$(max_age)
    [ "$age" -le "$limit" ] || die "the newest backup $last is ${age}s old (more than ${limit}s)"
    check_wal
    echo "backup: newest $last, ${age}s old"
}

list() {
    t=$(now)
    for name in $(backups); do
        echo "$name $((t - $(name_epoch "$name"))) $(wc -c < "$BACKUP_ROOT/$name" | tr -d ' ')"
    done
}

restore_into() {
    f=$1 db=$2
    valid_db "$db"
    verify_file "$f"
    exists=$(psql -X -At -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'") || die "cannot reach PostgreSQL"
    [ -z "$exists" ] || die "database $db exists already"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" >/dev/null || die "cannot create database $db"
    out=$(pg_restore --no-owner --no-privileges --exit-on-error --single-transaction -d "$db" "$f" 2>&1) || {
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
        die "restoring $f into $db failed (dropped $db again): $out"
    }
    info "restored ${f##*/} into $db"
}

counts() {
    db=$1
    tables=$(psql -X -At -d "$db" -c "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1") \
        || die "cannot read the tables of $db"
    for t in $tables; do
        echo "$t $(psql -X -At -d "$db" -c "SELECT count(*) FROM \"$t\"")"
    done
}

valid_db() { case $1 in *[!a-z0-9_]*|"") die "database name must be [a-z0-9_]+, not '$1'" ;; esac; }

drop() {
    valid_db "$1"
    [ "$1" != "$PGDATABASE" ] || die "refusing to drop the live database $1"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null 2>&1 || die "cannot drop $1"
}

# NEW becomes PGDATABASE; the previous one is kept as PGDATABASE_before_restore (replacing an older one) until
# the operator drops it. Sessions still on the live database (nothing of ours: app and tasks are stopped) end.
swap() {
    new=$1 old=${PGDATABASE}_before_restore
    valid_db "$new"; valid_db "$PGDATABASE"
    out=$(psql -X -q -v ON_ERROR_STOP=1 -d postgres 2>&1 <<EOF
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$PGDATABASE' AND pid <> pg_backend_pid();
DROP DATABASE IF EXISTS $old;
ALTER DATABASE $PGDATABASE RENAME TO $old;
ALTER DATABASE $new RENAME TO $PGDATABASE;
EOF
) || die "swapping $new in as $PGDATABASE failed: $out"
    info "$new is now $PGDATABASE; the previous database is kept as $old"
}

# shellcheck source=backup/wal.sh
. "$LIB/wal.sh"
# shellcheck source=backup/pitr.sh
. "$LIB/pitr.sh"

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in restore-into | counts | drop | swap | windows | plan | recover-into) login ;; esac
case $cmd in
    loop) loop ;;
    now) backup_now ;;
    list) list ;;
    newest) newest ;;
    check) check ;;
    prune) prune ;;
    kept) kept "$@" ;;
    verify-file) [ $# -eq 1 ] || die "usage: verify-file FILE"; verify_file "$1"; info "${1##*/} is a complete custom-format dump" ;;
    restore-into) [ $# -eq 2 ] || die "usage: restore-into FILE DATABASE"; restore_into "$1" "$2" ;;
    counts) [ $# -eq 1 ] || die "usage: counts DATABASE"; counts "$1" ;;
    epoch) name_epoch "$1" ;;
    dbname) echo "$PGDATABASE" ;;
    drop) [ $# -eq 1 ] || die "usage: drop DATABASE"; drop "$1" ;;
    swap) [ $# -eq 1 ] || die "usage: swap DATABASE"; swap "$1" ;;
    base) base_now ;;
    windows) windows ;;
    plan) [ $# -eq 1 ] || die "usage: plan latest|TIME"; plan "$1" ;;
    recover-into) [ $# -eq 2 ] || die "usage: recover-into latest|TIME DATABASE"; recover_into "$1" "$2" ;;
    wal-get) wal_get "$@" ;;
    *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; [ "$cmd" = -h ] || [ "$cmd" = --help ] || [ "$cmd" = help ] ;;
esac
