#!/usr/bin/env bash
# Watch mode: `app serve` and `app tasks` run on this machine, rebuilt and restarted on every change; PostgreSQL
# and Redis come from compose/dev.yml, published on 127.0.0.1 only (compose/dev-host.yml).
#
#   scripts/watch.sh            start db and redis, build, start app and tasks, then rebuild and restart them on
#                               every change (Ctrl-C stops app and tasks; db and redis keep running)
#   scripts/watch.sh --prepare  `cargo sqlx prepare` against the development database (after a query change)
#   scripts/watch.sh --step     one build-and-restart step (what the watcher runs on a change)
#   scripts/watch.sh --help
#
# The watcher (watchexec --socket) opens the HTTP port itself and keeps it open; each `app serve` adopts it
# (LISTEN_FDS). A change to src/, core/, migrations/, Cargo.toml, Cargo.lock or .sqlx/ runs a step: an
# incremental debug build for this machine's own target; on a compile error nothing else happens and the running
# app keeps serving. Otherwise `app migrate` runs first when migrations/ changed, then a new `app serve` starts on
# the same socket, and once it serves, the old one gets SIGTERM and finishes what it has. The socket is never
# closed, so a request made meanwhile waits in its backlog instead of being refused. `app tasks` is replaced the
# same way (the old worker finishes or hands back its running tasks). templates/ and static/ are not watched: the
# app reads them from the tree on the next request.
#
# Needs: cargo (rustup reads rust-toolchain.toml), watchexec 2.3 or later (for --socket; `cargo install
# watchexec-cli --locked`, or the Nix dev shell), Docker with Compose v2. Logs: target/watch/app.log and
# target/watch/tasks.log (the paths are printed), also shown in this terminal.
#
# Environment: DEV_HTTP_PORT (default 8000), DEV_DB_PORT (5432), DEV_REDIS_PORT (6379), COMPOSE_PROJECT_NAME,
# CARGO_TARGET_DIR, WATCH_DIR (default <target dir>/watch: the binary, logs and pids), and the app's own settings (README "Configuration"): env/dev.env gives the development
# values of those your shell does not set; the database and Redis addresses are always the published ones.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac
watch_dir=${WATCH_DIR:-$target_dir/watch}
case $watch_dir in /*) ;; *) watch_dir=$PWD/$watch_dir ;; esac
built=$target_dir/debug/app
# The sqlx query macros read the committed .sqlx/ data, never a database.
export SQLX_OFFLINE=true
watched=(src core migrations Cargo.toml Cargo.lock .sqlx)
http_port=${DEV_HTTP_PORT:-8000}
db_port=${DEV_DB_PORT:-5432}
redis_port=${DEV_REDIS_PORT:-6379}

say() { printf 'watch: %s\n' "$*"; }
die() { printf 'watch: %s\n' "$*" >&2; exit 1; }
compose() { docker compose -f "$repo/compose/dev.yml" -f "$repo/compose/dev-host.yml" "$@"; }
now() { date +%s.%N 2>/dev/null | sed 's/N$/0/'; } # macOS date has no %N: whole seconds there
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# Every file of migrations/, names and contents: its change means `app migrate` before the restart.
migrations_sum() {
    (cd "$repo" && find migrations -type f | LC_ALL=C sort | while IFS= read -r f; do
        printf '%s\n' "$f"
        cat "$f"
    done | cksum)
}

# The app's settings for host processes: env/dev.env where the shell has not set a value, then the published
# addresses of db and redis, the tree's templates and static files, and no metrics port to collide on (two
# processes of a role overlap during a restart).
app_env() {
    local line name
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in '' | '#'*) continue ;; esac
        name=${line%%=*}
        # shellcheck disable=SC2163  # exports NAME=VALUE as written in the file
        [ -n "${!name+set}" ] || export "$line"
    done < "$repo/env/dev.env"
    export POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$db_port REDIS_URL="redis://127.0.0.1:$redis_port/0"
    export LISTEN_ADDR=127.0.0.1:$http_port METRICS_ADDR=127.0.0.1:0
    export TEMPLATE_DIR=$repo/templates STATIC_DIR=$repo/static
    # The step waits for the new server's "serving" line: keep it whatever RUST_LOG says.
    export RUST_LOG="${RUST_LOG:-info},app::startup::web=info"
}

database_url() {
    printf 'postgres://%s:%s@127.0.0.1:%s/%s' "$POSTGRES_USER" "$POSTGRES_PASSWORD" "$db_port" "$POSTGRES_DB"
}

# `[ -e /dev/tcp/... ]` is not a thing: bash opens the connection on redirection.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_docker() {
    command -v docker >/dev/null || die "missing the docker CLI (Docker Desktop, or Docker Engine with Compose v2)"
    docker compose version >/dev/null 2>&1 || die "missing Docker Compose v2 (docker compose)"
    docker info >/dev/null 2>&1 || die "no Docker engine answers (start Docker Desktop or dockerd)"
}

preflight() {
    local missing=()
    command -v cargo >/dev/null || missing+=("cargo: rustup (https://rustup.rs), which reads rust-toolchain.toml; or the Nix dev shell")
    if ! command -v watchexec >/dev/null; then
        missing+=("watchexec 2.3 or later: cargo install watchexec-cli --locked (or the Nix dev shell)")
    elif ! watchexec --help 2>/dev/null | grep -q -- '--socket'; then
        missing+=("a watchexec with --socket (2.3 or later; this one is $(watchexec --version)): cargo install watchexec-cli --locked")
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        for m in "${missing[@]}"; do printf 'watch: missing %s\n' "$m" >&2; done
        exit 1
    fi
    need_docker
}

services_up() {
    say "starting db and redis (compose/dev.yml, published on 127.0.0.1:$db_port and 127.0.0.1:$redis_port)"
    compose up --detach --wait --wait-timeout 120 db redis \
        || die "db or redis did not become healthy: docker compose -f compose/dev.yml -f compose/dev-host.yml logs db redis"
}

# The process recorded in pidfile $1 if it still runs ours ($watch_dir/app), else nothing.
recorded_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    case $(ps -o command= -p "$pid" 2>/dev/null) in "$watch_dir/app "*) echo "$pid" ;; esac
}

# SIGTERM to a process, then wait for it to end (SIGKILL after SHUTDOWN_TIMEOUT and 10 s more).
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < (${SHUTDOWN_TIMEOUT:-20} + 10) * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Starts `$watch_dir/app ROLE` in the background, its output appended to $watch_dir/ROLE.log; prints its pid.
# Only `serve` gets the watcher's socket (LISTEN_FDS, descriptor 3), with LISTEN_PID naming the server itself.
launch() {
    local role=$1 log=$watch_dir/$2.log
    if [ "$role" = serve ]; then
        (export LISTEN_PID=$BASHPID && exec "$watch_dir/app" serve) >>"$log" 2>&1 </dev/null &
    else
        (unset LISTEN_FDS LISTEN_PID LISTEN_FDNAMES && exec "$watch_dir/app" "$role" 3>&-) >>"$log" 2>&1 </dev/null &
    fi
    echo $!
}

# Waits until the server started as $1 logged "serving" after byte $2 of app.log: from then on it accepts on the
# shared socket. Fails when it exits first or takes longer than WAIT_TIMEOUT (60 s) and 10 s more.
wait_serving() {
    local pid=$1 from=$2 i esc=$'\e'
    for ((i = 0; i < (${WAIT_TIMEOUT:-60} + 10) * 20; i++)); do
        # Pretty lines carry ANSI colours around field names; JSON lines a "message" field. grep -c reads all its
        # input: grep -q could end tail by SIGPIPE, a failure under pipefail.
        if [ "$(tail -c "+$((from + 1))" "$watch_dir/app.log" \
            | grep -Ec "serving( |$esc\[[0-9;]*m)+addr|\"message\":\"serving\"")" != 0 ]; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

file_size() { wc -c 2>/dev/null <"$1" | tr -d ' '; }

# One step: build; on success, migrate when migrations/ changed and replace app and tasks by the new build.
step() {
    local started sum old_serve old_tasks new_serve new_tasks from
    started=$(now)
    [ -n "${LISTEN_FDS:-}" ] || die "--step runs under the watcher (watchexec --socket), which passes the socket"
    mkdir -p "$watch_dir"
    app_env
    if ! (cd "$repo" && cargo build --bin app); then
        say "build failed (above); the running app and tasks keep serving the previous build"
        return 1
    fi
    say "built in $(since "$started")"
    old_serve=$(recorded_pid "$watch_dir/app.pid")
    old_tasks=$(recorded_pid "$watch_dir/tasks.pid")
    if [ "$built" -ef "$watch_dir/app" ] && [ -n "$old_serve" ] && [ -n "$old_tasks" ]; then
        say "the binary did not change; nothing restarted"
        return 0
    fi
    # A hard link: the running processes keep the old file, and cargo's next build makes a new one.
    ln -f "$built" "$watch_dir/app.next"
    sum=$(migrations_sum)
    if [ "$sum" != "$(cat "$watch_dir/migrations.sum" 2>/dev/null)" ]; then
        say "migrations/ changed: app migrate"
        if ! "$watch_dir/app.next" migrate 3>&- </dev/null; then
            rm -f "$watch_dir/app.next"
            say "app migrate failed (above); the running app and tasks keep serving the previous build"
            return 1
        fi
        printf '%s\n' "$sum" >"$watch_dir/migrations.sum"
    fi
    mv -f "$watch_dir/app.next" "$watch_dir/app"

    from=$(file_size "$watch_dir/app.log")
    new_serve=$(launch serve app)
    if ! wait_serving "$new_serve" "$from"; then
        kill -TERM "$new_serve" 2>/dev/null || true
        say "the new build did not start serving (see $watch_dir/app.log); the previous app keeps serving"
        tail -n 20 "$watch_dir/app.log" >&2 || true
        return 1
    fi
    echo "$new_serve" >"$watch_dir/app.pid"
    [ -z "$old_serve" ] || kill -TERM "$old_serve" 2>/dev/null || true
    new_tasks=$(launch tasks tasks)
    echo "$new_tasks" >"$watch_dir/tasks.pid"
    [ -z "$old_tasks" ] || kill -TERM "$old_tasks" 2>/dev/null || true
    say "serving the new build ($(since "$started") after the change): http://localhost:$http_port/"
}

# Ends app and tasks (graceful: SIGTERM, what is in flight finishes) and anything the watcher left behind.
stop_processes() {
    local pid role
    for role in app tasks; do
        pid=$(recorded_pid "$watch_dir/$role.pid")
        [ -z "$pid" ] || stop_pid "$pid"
        rm -f "$watch_dir/$role.pid"
    done
}

tail_pid=""
start() {
    local args=() path
    mkdir -p "$watch_dir"
    if port_taken "$http_port"; then
        die "127.0.0.1:$http_port is taken (the dev stack's app container? docker compose -f compose/dev.yml stop app tasks); or set DEV_HTTP_PORT"
    fi
    # Processes of an earlier run that did not stop (its terminal was closed): stopped before this one starts.
    stop_processes
    services_up
    touch "$watch_dir/app.log" "$watch_dir/tasks.log"
    trap 'stop_processes; [ -z "$tail_pid" ] || kill "$tail_pid" 2>/dev/null; say "stopped app and tasks; db and redis keep running (docker compose -f compose/dev.yml down stops them)"' EXIT
    trap 'exit 130' INT TERM
    say "logs: $watch_dir/app.log and $watch_dir/tasks.log (tail -f them from another shell; also shown here)"
    say "database: $(app_env && database_url) (scripts/watch.sh --prepare runs cargo sqlx prepare against it)"
    say "watching ${watched[*]}; templates/ and static/ are served from the tree; Ctrl-C stops"
    tail -n 0 -F "$watch_dir/app.log" "$watch_dir/tasks.log" &
    tail_pid=$!
    cd "$repo"
    for path in "${watched[@]}"; do [ -e "$path" ] && args+=(--watch "$path"); done
    # No --postpone: the first step builds and starts app and tasks. queue: a change during a step runs one more
    # step afterwards instead of interrupting this one.
    watchexec --socket "127.0.0.1:$http_port" "${args[@]}" --on-busy-update queue --shell none \
        -- bash "$repo/scripts/watch.sh" --step
}

prepare() {
    command -v cargo >/dev/null || die "missing cargo"
    cargo sqlx --version >/dev/null 2>&1 \
        || die "missing sqlx-cli: cargo install sqlx-cli --version 0.9.0 --no-default-features --features postgres --locked (the Nix dev shell has it)"
    need_docker
    services_up
    app_env
    export DATABASE_URL
    DATABASE_URL=$(database_url)
    cd "$repo"
    # The dev database may lag migrations/ (the watcher migrates only while it runs).
    cargo sqlx migrate run
    env -u SQLX_OFFLINE cargo sqlx prepare --workspace
    say ".sqlx/ regenerated against $DATABASE_URL; commit it with the query change"
}

case ${1:-} in
    -h | --help) usage ;;
    --step) step ;;
    --prepare) prepare ;;
    "") preflight; start ;;
    *) printf 'watch: unknown argument %s (see --help)\n' "$1" >&2; exit 2 ;;
esac
