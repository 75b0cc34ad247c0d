# shellcheck shell=sh
# Point-in-time recovery from the archives of backup/wal.sh; sourced by backup/service.sh after wal.sh.
#
# A recovery never touches the running server's files: the base backup is unpacked into a scratch directory in the
# backup volume, a PostgreSQL of its own (socket only, in /tmp) replays the archived WAL up to the target and is
# promoted, and its database is then dumped and restored into a fresh database of the running server, which
# scripts/backup.sh swaps in exactly as it swaps in a restored dump. So it works the same after the database volume
# was lost (the running server is then a new, empty cluster), and the replaced data stays until it is dropped.

SCRATCH=$BACKUP_ROOT/.pitr-restore
SCRATCH_PORT=5433

# The recoverable window of each archive: ARCHIVE FIRST LAST STATE, FIRST and LAST in seconds since the epoch.
# FIRST: when its oldest base backup finished. LAST: now for the archive being streamed (STATE running), else
# when its WAL was last written (STATE ended). Archives without a base backup have no window.
windows() {
    [ -d "$PITR" ] || return 0
    running=$(cluster_id 2>/dev/null) || running=""
    streamed=$(cat "$STATE.archive" 2>/dev/null) || streamed=""
    for dir in "$PITR"/*/; do
        dir=${dir%/}; a=${dir##*/}
        oldest=$(bases "$dir" | head -n 1)
        [ -n "$oldest" ] || continue
        first=$(cat "$dir/$oldest/done")
        if [ "$a" = "$running" ] && [ "$a" = "$streamed" ]; then
            echo "$a $first $(now) running"
        else
            # shellcheck disable=SC2012  # segment names: hexadecimal digits and dots only
            newest_file=$(ls -t "$dir/wal" | head -n 1)
            last=$first
            [ -z "$newest_file" ] || last=$(date -r "$dir/wal/$newest_file" +%s)
            [ "$last" -ge "$first" ] || last=$first
            echo "$a $first $last ended"
        fi
    done
}

target_epoch() { # TEXT: seconds since the epoch of a time PostgreSQL reads, UTC unless it says otherwise
    PGTZ=UTC psql -X -At -v ON_ERROR_STOP=1 -v t="$1" 2>/dev/null <<'SQL'
SELECT floor(extract(epoch FROM :'t'::timestamptz))::bigint;
SQL
}
target_text() { # TEXT: the same time, normalised for recovery_target_time
    PGTZ=UTC psql -X -At -v ON_ERROR_STOP=1 -v t="$1" 2>/dev/null <<'SQL'
SELECT to_char(:'t'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00';
SQL
}

# plan latest|TIME: "ARCHIVE BASE TARGET" (TARGET "latest" or recovery_target_time's text), or one refusing line.
# latest: the end of the newest window of an archive that is no longer streamed (after the database volume was
# lost, the lost cluster's last WAL), else of the running one. TIME: the archive whose window holds it, and its
# newest base backup finished by then.
plan() {
    w=$(windows)
    [ -n "$w" ] || die "refused: there is no base backup yet (scripts/backup.sh now takes one)"
    if [ "$1" = latest ]; then
        pick=$(echo "$w" | awk '$4 == "ended" && $3 > best { best = $3; a = $1 } END { print a }')
        [ -n "$pick" ] || pick=$(echo "$w" | awk '$4 == "running" { print $1 }')
        [ -n "$pick" ] || die "refused: no archive to recover from"
        echo "$pick $(bases "$PITR/$pick" | tail -n 1) latest"
        return 0
    fi
    t=$(target_epoch "$1") || t=""
    [ -n "$t" ] || die "refused: '$1' is not a time (give UTC, for example '2026-12-08 14:05:00')"
    pick=$(echo "$w" | awk -v t="$t" '$2 <= t && t <= $3 { print $1 }' | tail -n 1)
    if [ -z "$pick" ]; then
        ranges=$(echo "$w" | while read -r a first last state; do
            printf '%s to %s UTC; ' "$(utc "$first")" "$(utc "$last")"
        done)
        die "refused: $1 is outside the recoverable window (${ranges%; }); nothing changed"
    fi
    base=""
    for b in $(bases "$PITR/$pick"); do
        [ "$(cat "$PITR/$pick/$b/done")" -le "$t" ] && base=$b
    done
    echo "$pick $base $(target_text "$1")"
}

scratch_pid=""
scratch_stop() {
    [ -n "$scratch_pid" ] || return 0
    kill -INT "$scratch_pid" 2>/dev/null && wait "$scratch_pid" 2>/dev/null
    scratch_pid=""
    return 0
}

# The scratch server (its own child, so its death is seen) until it is promoted (recovery done), or dead. Hot
# standby is off, so it takes connections only once it is promoted. Its log: $SCRATCH.log.
scratch_run() {
    sock=${TMPDIR:-/tmp}/pitr-socket
    mkdir -p "$sock"
    printf 'local all all trust\n' > "${TMPDIR:-/tmp}/pitr-hba.conf"
    postgres -D "$SCRATCH" -c listen_addresses= -c port=$SCRATCH_PORT -c unix_socket_directories="$sock" \
        -c hba_file="${TMPDIR:-/tmp}/pitr-hba.conf" -c hot_standby=off -c archive_mode=off -c shared_buffers=32MB \
        -c logging_collector=off -c ssl=off -c timezone=UTC -c log_timezone=UTC >> "$SCRATCH.log" 2>&1 &
    scratch_pid=$!
    while kill -0 "$scratch_pid" 2>/dev/null; do
        state=$(psql -X -At -h "$sock" -p "$SCRATCH_PORT" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null) \
            && [ "$state" = f ] && return 0
        sleep 0.2
    done
    wait "$scratch_pid" 2>/dev/null
    scratch_pid=""
    return 1
}

# recover-into latest|TIME DATABASE: the database as it was at TIME (or as late as the archive goes), restored into
# DATABASE (which must not exist) of the running server.
recover_into() {
    target=$1 db=$2
    valid_db "$db"
    p=$(plan "$target") || exit 1
    # shellcheck disable=SC2086
    set -- $p
    archive=$1 base=$2; shift 2; rtarget=$*
    started=$(now)
    # A scratch server left by an interrupted recovery holds the socket: stop it first.
    [ ! -f "$SCRATCH/postmaster.pid" ] || pg_ctl --pgdata="$SCRATCH" --mode=immediate --wait stop >/dev/null 2>&1 || true
    rm -rf "$SCRATCH" "$SCRATCH.log" "$SCRATCH.dump"
    mkdir -p "$SCRATCH/pg_wal" && chmod 700 "$SCRATCH" || die "cannot create $SCRATCH"
    tar -xzf "$PITR/$archive/$base/base.tar.gz" -C "$SCRATCH" || die "cannot unpack $archive/$base"
    tar -xzf "$PITR/$archive/$base/pg_wal.tar.gz" -C "$SCRATCH/pg_wal" || die "cannot unpack $archive/$base's WAL"
    : > "$SCRATCH/recovery.signal"
    {
        echo "restore_command = 'sh $SELF wal-get %f %p $PITR/$archive/wal'"
        echo "recovery_target_action = 'promote'"
        [ "$rtarget" = latest ] || echo "recovery_target_time = '$rtarget'"
    } >> "$SCRATCH/postgresql.auto.conf"
    info "recovering $archive/$base to $rtarget"
    if ! scratch_run; then
        # No commit after the target in the archive: every commit it holds is at or before the target, so the end
        # of the WAL is the state at the target. Replay to the end instead (the server resumes where it stopped).
        grep -q 'recovery ended before configured recovery target was reached' "$SCRATCH.log" \
            || { scratch_stop; die "recovery failed: $(grep -E 'FATAL|PANIC' "$SCRATCH.log" | tail -n 1)"; }
        sed -i '/^recovery_target_time/d' "$SCRATCH/postgresql.auto.conf"
        scratch_run || { scratch_stop; die "recovery failed: $(grep -E 'FATAL|PANIC' "$SCRATCH.log" | tail -n 1)"; }
    fi
    out=$(pg_dump -h "${TMPDIR:-/tmp}/pitr-socket" -p "$SCRATCH_PORT" --format=custom --no-owner --no-privileges \
        --file="$SCRATCH.dump" "$PGDATABASE" 2>&1) || { scratch_stop; die "dumping the recovered $PGDATABASE failed: $out"; }
    scratch_stop
    rm -rf "$SCRATCH"
    restore_into "$SCRATCH.dump" "$db"
    rm -f "$SCRATCH.dump" "$SCRATCH.log"
    info "recovered to $rtarget in $(($(now) - started))s"
}

# restore_command of the scratch server: SEGMENT DESTINATION WAL_DIR. A gzipped segment is unpacked; the segment
# still being written (.partial, padded to full size) is taken as it is: replay stops where its records end.
wal_get() {
    f=$3/$1
    if [ -f "$f" ]; then cp "$f" "$2"
    elif [ -f "$f.gz" ]; then gzip -dc "$f.gz" > "$2"
    elif [ -f "$f.partial" ]; then cp "$f.partial" "$2"
    else exit 1
    fi
}
