# shellcheck shell=sh
# Continuous WAL archiving and base backups; sourced by backup/service.sh, which defines die, info, login, now,
# BACKUP_ROOT and the lock. Notes: backup/README.md.
#
# Under $BACKUP_ROOT/pitr/ one directory per archive, named after the database cluster's system identifier: a
# cluster started on an empty volume starts a new archive, and so does a stream that broke (the replication slot
# was invalidated): its directory is renamed <id>-until-<UTC time>, and it stays restorable up to there.
#   <archive>/wal/                     pg_receivewal's segments: complete ones gzipped (<segment>.gz), the one being
#                                      written <segment>.partial (16 MiB, padded, readable as it grows)
#   <archive>/base-<time>-<version>/   pg_basebackup -Ft -z -X stream: base.tar.gz, pg_wal.tar.gz, backup_manifest,
#                                      start_wal (its first segment) and done (when it finished, seconds since the
#                                      epoch: the earliest moment it can be recovered to)

SLOT=backup_wal
PITR=$BACKUP_ROOT/pitr
# The stream supervisor's state for `check` (the healthcheck runs in the same container, so it sees this /tmp).
STATE=${TMPDIR:-/tmp}/backup-wal

wal_enabled() {
    case ${BACKUP_WAL:-on} in
        on) return 0 ;;
        off) return 1 ;;
        *) die "BACKUP_WAL must be on or off, not '$BACKUP_WAL'" ;;
    esac
}

seconds_setting() { # NAME DEFAULT: a whole number of seconds > 0
    v=""
    eval "v=\${$1:-$2}"
    case $v in *[!0-9]*|"") die "$1 must be a number of seconds, not '$v'" ;; esac
    [ "$v" -gt 0 ] || die "$1 must be > 0"
    echo "$v"
}
max_lag() { seconds_setting BACKUP_MAX_LAG 30; }
switch_every() { seconds_setting BACKUP_WAL_SWITCH 60; }

stamp() { date -u +%Y%m%dT%H%M%SZ; }
utc() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S'; }

cluster_id() { # the running cluster's system identifier (fails when PostgreSQL does not answer)
    psql -X -At -c 'SELECT system_identifier FROM pg_control_system()'
}

bases() { # ARCHIVE_DIR: its complete base backups' names, oldest first
    for b in "$1"/base-*; do
        [ -f "$b/done" ] && echo "${b##*/}"
    done
    return 0
}

# One base backup of the running cluster into its archive: written under a hidden name, renamed when complete.
# --checkpoint=fast: the default spread checkpoint can take minutes before the copy even starts.
base_backup() {
    id=$(cluster_id 2>&1) || die "cannot reach PostgreSQL for a base backup: $id"
    dir=$PITR/$id
    mkdir -p "$dir/wal"
    version=$(echo "$APP_VERSION" | tr -c 'A-Za-z0-9._\n-' '_')
    name="base-$(stamp)-$version"
    tmp_base="$dir/.partial-$name"
    [ ! -e "$dir/$name" ] || die "$name exists already (two base backups in one second)"
    started=$(now)
    out=$(pg_basebackup --pgdata="$tmp_base" --format=tar --gzip --wal-method=stream --checkpoint=fast \
        --no-password 2>&1) || { rm -rf "$tmp_base"; die "pg_basebackup failed: $out"; }
    start_wal=$(tar -xzOf "$tmp_base/base.tar.gz" backup_label | sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]*\))$/\1/p')
    [ -n "$start_wal" ] || { rm -rf "$tmp_base"; die "the base backup has no readable backup_label"; }
    echo "$start_wal" > "$tmp_base/start_wal"
    now > "$tmp_base/done"
    mv "$tmp_base" "$dir/$name"
    info "wrote base backup $id/$name ($(du -sk "$dir/$name" | cut -f1) KiB, $(($(now) - started))s)"
}

# Base backups: BACKUP_KEEP over all archives together (the names carry the time; kept_bases keeps each day's
# first); WAL before the oldest kept base backup of an archive is deleted; an archive left with no base backup goes,
# unless it is the running one.
prune_pitr() {
    [ -d "$PITR" ] || return 0
    all=""
    for dir in "$PITR"/*/; do
        dir=${dir%/}; [ -d "$dir" ] || continue
        for b in $(bases "$dir"); do all="$all $b"; done
    done
    # shellcheck disable=SC2086
    keep=" $(kept_bases $all | tr '\n' ' ') "
    running=$(cluster_id 2>/dev/null) || running=""
    for dir in "$PITR"/*/; do
        dir=${dir%/}; [ -d "$dir" ] || continue
        for b in $(bases "$dir"); do
            case $keep in *" $b "*) ;; *) rm -rf "${dir:?}/$b"; info "pruned base backup ${dir##*/}/$b" ;; esac
        done
        oldest=$(bases "$dir" | head -n 1)
        if [ -z "$oldest" ]; then
            [ "${dir##*/}" = "$running" ] || { rm -rf "$dir"; info "pruned archive ${dir##*/} (no base backup left)"; }
            continue
        fi
        first=$(cat "$dir/$oldest/start_wal")
        for f in "$dir"/wal/*; do
            seg=${f##*/}; seg=${seg%%.*}
            case $seg in ????????????????????????) ;; *) continue ;; esac   # 24 hex digits: a segment
            # Segment names sort by position within a timeline.
            [ "$seg" = "$first" ] || [ "$(printf '%s\n%s\n' "$seg" "$first" | sort | head -n 1)" = "$first" ] \
                || rm -f "$f"
        done
    done
}

# Complete segments are gzipped (a segment closed early by a WAL switch is mostly zeros): written to a hidden name
# and renamed, with the segment's time, so pg_receivewal never sees half a file and the window's end stays true.
compress_segments() {
    for f in "$1"/????????????????????????; do
        [ -f "$f" ] || continue
        gzip -1 -c "$f" > "$1/.tmp.gz" && touch -r "$f" "$1/.tmp.gz" && mv "$1/.tmp.gz" "$f.gz" && rm -f "$f" \
            || echo "backup: ERROR: cannot compress $f" >&2
    done
}

receiver=""
receiving() { [ -n "$receiver" ] && kill -0 "$receiver" 2>/dev/null; }
stop_receiver() {
    receiving && { kill "$receiver" 2>/dev/null; wait "$receiver" 2>/dev/null; }
    receiver=""
}

# The stream supervisor, run beside the schedule by `loop`: keeps one pg_receivewal streaming into the running
# cluster's archive over the replication slot, measures the lag once a second, gzips complete segments, switches
# WAL every BACKUP_WAL_SWITCH seconds (so the off-host copy, which takes complete segments only, is at most that far
# behind), and records its state in PostgreSQL (backup_status) when it changes, every 5 s while something is wrong,
# and once a minute otherwise.
#
# Lag: the moment the receiver last had everything the server had written one sample earlier. A receiver that
# stalls (or a supervisor that dies) stops that moment from advancing, so the lag grows with it.
wal_loop() {
    archive="" prev_lsn=0/0 prev_t=$(now) caught_at=$(now) last_switch=$(now) reported="" reported_at=0
    every=$(switch_every); limit=$(max_lag)
    info "streaming WAL into $PITR (slot $SLOT, lag limit ${limit}s, WAL switch every ${every}s)"
    trap 'stop_receiver; exit 0' TERM INT
    while :; do
        t=$(now)
        login
        wal_problem=""
        row=$(psql -X -At -F ' ' -v prev="$prev_lsn" 2>&1 <<'SQL'
SELECT (SELECT system_identifier FROM pg_control_system()), pg_current_wal_lsn(), coalesce(s.wal_status, 'none'),
       coalesce((SELECT r.flush_lsn >= :'prev'::pg_lsn FROM pg_stat_replication r WHERE r.pid = s.active_pid), false)
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = 'backup_wal';
SQL
        ) || { wal_problem="cannot reach PostgreSQL: $(echo "$row" | tail -n 1)"; row=""; }
        if [ -n "$row" ]; then
            # shellcheck disable=SC2086
            set -- $row
            id=$1 lsn=$2 slot=$3 caught=$4
            if [ "$id" != "$archive" ]; then
                stop_receiver
                archive=$id
                mkdir -p "$PITR/$archive/wal"
                info "database system $id: archive $PITR/$archive"
            fi
            if [ "$slot" = lost ]; then
                # max_slot_wal_keep_size was reached: the server dropped WAL this archive never got. It ends here.
                stop_receiver
                psql -X -q -c "SELECT pg_drop_replication_slot('$SLOT')" >/dev/null 2>&1 || true
                moved="$archive-until-$(stamp)"
                mv "$PITR/$archive" "$PITR/$moved"
                mkdir -p "$PITR/$archive/wal"
                echo "backup: ERROR: the replication slot was invalidated (max_slot_wal_keep_size reached): archive kept as $moved, a new one starts with the next base backup" >&2
                slot=none
            fi
            if ! receiving; then
                [ "$slot" != none ] || out=$(pg_receivewal --slot="$SLOT" --create-slot --if-not-exists --no-password 2>&1) \
                    || echo "backup: ERROR: cannot create the replication slot: $out" >&2
                pg_receivewal --directory="$PITR/$archive/wal" --slot="$SLOT" --synchronous --no-loop \
                    --status-interval=1 --no-password &
                receiver=$!
            fi
            [ "$caught" = t ] && caught_at=$prev_t
            prev_lsn=$lsn prev_t=$t
            compress_segments "$PITR/$archive/wal"
            if [ $((t - last_switch)) -ge "$every" ]; then
                psql -X -q -c 'SELECT pg_switch_wal()' >/dev/null 2>&1 || true
                last_switch=$t
            fi
            echo "$archive" > "$STATE.archive"
        fi
        lag=$((t - caught_at))
        echo "$caught_at" > "$STATE.tmp" && mv "$STATE.tmp" "$STATE.caught"
        [ "$lag" -le "$limit" ] || wal_problem="${wal_problem:-WAL streaming is ${lag}s behind (BACKUP_MAX_LAG ${limit}s)}"
        problem=$(problems "$wal_problem")
        # Reported when what is wrong changes (not each second a lag grows: digits do not count), and then every
        # 5 s while something is wrong (a growing lag shows), else every minute.
        key=$(echo "$problem|$(offsite_state)" | tr -d 0-9)
        every_s=60; [ -z "$problem" ] || every_s=5
        if [ "$key" != "$reported" ] || [ $((t - reported_at)) -ge "$every_s" ]; then
            report "$lag" "$limit" "$problem" && { reported=$key; reported_at=$t; }
        fi
        sleep 1 & wait $! || true
    done
}

# The off-host copy's last result, written by the offsite service (backup/offsite.sh) into the shared volume:
# "ok LAST_OK" or "failing LAST_OK MESSAGE" (LAST_OK: the last success, seconds since the epoch, 0 for none);
# no file: no remote configured.
OFFSITE_STATUS=$BACKUP_ROOT/.offsite-status
offsite_state() { [ -f "$OFFSITE_STATUS" ] && cut -d' ' -f1 "$OFFSITE_STATUS" || echo off; }

problems() { # WAL_PROBLEM: every problem, in one line ("" when healthy)
    p=$1
    if [ "$(offsite_state)" = failing ]; then
        p="${p:+$p; }the off-host copy failed: $(cut -d' ' -f3- "$OFFSITE_STATUS")"
    fi
    echo "$p"
}

report() { # LAG LIMIT PROBLEM: backup_status, for /readyz and the metrics
    state=$(offsite_state) ok_at=""
    [ "$state" = off ] || ok_at=$(cut -d' ' -f2 "$OFFSITE_STATUS")
    [ "$ok_at" != 0 ] || ok_at=""
    out=$(psql -X -q -v ON_ERROR_STOP=1 -v lag="$1" -v max="$2" -v problem="$3" -v offsite="$state" -v ok_at="$ok_at" 2>&1 <<'SQL'
INSERT INTO backup_status (id, wal_lag_seconds, max_lag_seconds, offsite, offsite_ok_at, problem, checked_at)
VALUES (true, :'lag', :'max', :'offsite', to_timestamp(NULLIF(:'ok_at', '')::float8), NULLIF(:'problem', ''), now())
ON CONFLICT (id) DO UPDATE SET wal_lag_seconds = EXCLUDED.wal_lag_seconds, max_lag_seconds = EXCLUDED.max_lag_seconds,
    offsite = EXCLUDED.offsite, offsite_ok_at = EXCLUDED.offsite_ok_at, problem = EXCLUDED.problem,
    checked_at = EXCLUDED.checked_at;
SQL
    ) || { echo "backup: ERROR: cannot record the backup status: $(echo "$out" | tail -n 1)" >&2; return 1; }
    [ -z "$3" ] || echo "backup: ERROR: $3" >&2
}

check_wal() { # the healthcheck's part: the stream's lag and the off-host copy
    if wal_enabled; then
        [ -f "$STATE.caught" ] || die "WAL streaming has not started"
        lag=$(($(now) - $(cat "$STATE.caught"))); limit=$(max_lag)
        [ "$lag" -le "$limit" ] || die "WAL streaming is ${lag}s behind (BACKUP_MAX_LAG ${limit}s)"
    fi
    [ "$(offsite_state)" != failing ] || die "the off-host copy failed: $(cut -d' ' -f3- "$OFFSITE_STATUS")"
    return 0
}
