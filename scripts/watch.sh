#!/usr/bin/env bash
# Watch mode: the development stack (compose/dev.yml + compose/watch.yml) kept in sync with the working tree.
#
#   scripts/watch.sh           build, start the stack, then rebuild and restart on every change (Ctrl-C stops
#                              watching; the stack keeps running)
#   scripts/watch.sh --rebuild one rebuild-and-restart step (what the watcher runs on a change)
#   scripts/watch.sh --help
#
# A change to src/, migrations/, build.rs, Cargo.toml, Cargo.lock or .sqlx/ rebuilds a statically linked (musl)
# debug binary on the host (cargo, target x86_64-unknown-linux-musl, incremental, linked by rust-lld), puts it
# into WATCH_BIN_DIR by a rename, runs `app migrate` first when migrations/ changed, then restarts app and tasks
# (SIGTERM: in-flight requests and running tasks finish, or are handed back, within SHUTDOWN_TIMEOUT). A compile
# error is printed and nothing is replaced: the previous binary keeps serving. templates/ and static/ are not
# watched: the app reads them from the working tree on the next request.
#
# Needs: Docker with Compose v2, cargo with the musl target (rustup target add x86_64-unknown-linux-musl),
# watchexec (cargo install watchexec-cli --locked; the Nix dev shell has it), and the app and httpd images of
# compose/dev.yml (nix run .#load). Database and Redis keep their data (volumes) across restarts.
#
# Environment: everything compose/dev.yml reads (DEV_VERSION, APP_IMAGE, DEV_HTTP_PORT, ...), COMPOSE_PROJECT_NAME,
# CARGO_TARGET_DIR, and WATCH_BIN_DIR (default: <target dir>/watch), the host directory mounted at /watch.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
musl=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-$repo/target}
export WATCH_BIN_DIR=${WATCH_BIN_DIR:-$target_dir/watch}
built=$target_dir/$musl/debug/app
# The sqlx query macros read the committed .sqlx/ data, never a database.
export SQLX_OFFLINE=true
watched=(src migrations build.rs Cargo.toml Cargo.lock .sqlx)

say() { printf 'watch: %s\n' "$*"; }
die() { printf 'watch: %s\n' "$*" >&2; exit 1; }
compose() { docker compose -f "$repo/compose/dev.yml" -f "$repo/compose/watch.yml" "$@"; }
dc() { compose "$@"; }
# shellcheck source=scripts/compose-status.sh
. "$repo/scripts/compose-status.sh"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
migrations_sum() { (cd "$repo" && find migrations -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

preflight() {
    local missing=()
    [ "$(uname -sm)" = "Linux x86_64" ] \
        || die "watch mode builds the containers' binary on the host: it needs Linux on x86_64, not $(uname -sm)"
    command -v docker >/dev/null || missing+=("the docker CLI")
    command -v docker >/dev/null && ! docker compose version >/dev/null 2>&1 && missing+=("Docker Compose v2 (docker compose)")
    command -v cargo >/dev/null || missing+=("cargo (rustup, which reads rust-toolchain.toml)")
    if command -v rustc >/dev/null && [ ! -d "$(rustc --print sysroot)/lib/rustlib/$musl/lib" ]; then
        missing+=("the musl target: rustup target add $musl")
    fi
    command -v watchexec >/dev/null || missing+=("watchexec: cargo install watchexec-cli --locked (or use the Nix dev shell)")
    if [ ${#missing[@]} -gt 0 ]; then
        for m in "${missing[@]}"; do printf 'watch: missing %s\n' "$m" >&2; done
        exit 1
    fi
}

build() {
    # Only the app crate is rebuilt after an edit; cargo prints a compile error as it is. Two settings for this
    # build only, which halve an incremental rebuild here: line tables instead of full debug info for the app
    # crate (backtraces keep file and line), and linking by the toolchain's own rust-lld (about a third of the
    # system linker's time for this ~170 MB binary; without rust-lld the default linker is used). `cargo rustc`
    # passes link flags to the binary alone: RUSTFLAGS would rebuild every dependency.
    local gcc_ld lld=()
    gcc_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
    [ -x "$gcc_ld/ld.lld" ] && lld=(-- -C link-arg=-fuse-ld=lld -C "link-arg=-B$gcc_ld")
    (cd "$repo" && cargo rustc --config 'profile.dev.package.app.debug="line-tables-only"' \
        --target "$musl" --bin app "${lld[@]}")
}

# Replaces WATCH_BIN_DIR/app by the fresh build (migrating first when migrations/ changed) and restarts app and
# tasks. The old binary stays in place until the migration succeeded.
install_and_restart() {
    local started=$1 sum
    if cmp -s "$built" "$WATCH_BIN_DIR/app"; then
        say "the binary did not change; nothing restarted"
        return 0
    fi
    cp "$built" "$WATCH_BIN_DIR/app.next"
    chmod 755 "$WATCH_BIN_DIR/app.next"
    sum=$(migrations_sum)
    if [ "$sum" != "$(cat "$WATCH_BIN_DIR/migrations.sha256" 2>/dev/null)" ]; then
        say "migrations/ changed: app migrate"
        if ! one_off --entrypoint /watch/app.next migrate migrate; then
            rm -f "$WATCH_BIN_DIR/app.next"
            die "app migrate failed; app and tasks keep running the previous build"
        fi
        printf '%s\n' "$sum" > "$WATCH_BIN_DIR/migrations.sha256"
    fi
    mv -f "$WATCH_BIN_DIR/app.next" "$WATCH_BIN_DIR/app"
    say "restarting app and tasks"
    compose restart app tasks
    if compose up --detach --wait --wait-timeout 120 --no-deps --no-recreate app tasks; then
        say "app and tasks are healthy, running the new build ($(since "$started") after the change)"
    else
        compose ps app tasks >&2 || true
        die "app or tasks did not become healthy: see docker compose -f compose/dev.yml -f compose/watch.yml logs app tasks"
    fi
}

rebuild() {
    local started; started=$(now)
    if ! build; then
        die "build failed (above); app and tasks keep running the previous build"
    fi
    say "built in $(since "$started")"
    install_and_restart "$started"
}

start() {
    local started running changed=0; started=$(now)
    mkdir -p "$WATCH_BIN_DIR"
    # A stack left running by an earlier session keeps its old process: restarted below when the binary changed.
    running=$(compose ps -q --status running app tasks 2>/dev/null || true)
    say "building the musl debug binary ($musl; the first build compiles every dependency)"
    if build; then
        cmp -s "$built" "$WATCH_BIN_DIR/app" || changed=1
        cp "$built" "$WATCH_BIN_DIR/app.next"
        chmod 755 "$WATCH_BIN_DIR/app.next"
        mv -f "$WATCH_BIN_DIR/app.next" "$WATCH_BIN_DIR/app"
    elif [ -x "$WATCH_BIN_DIR/app" ]; then
        say "build failed (above); starting with the previous build in $WATCH_BIN_DIR"
    else
        die "build failed (above); fix it and run scripts/watch.sh again"
    fi
    say "starting the stack (migrate runs first)"
    compose up --detach --wait --wait-timeout 240 \
        || die "the stack did not become healthy: docker compose -f compose/dev.yml -f compose/watch.yml ps / logs"
    if [ -n "$running" ] && [ "$changed" = 1 ]; then
        say "app and tasks were already running: restarting them on this build"
        compose restart app tasks
        compose up --detach --wait --wait-timeout 120 --no-deps --no-recreate app tasks \
            || die "app or tasks did not become healthy: docker compose -f compose/dev.yml -f compose/watch.yml logs app tasks"
    fi
    migrations_sum > "$WATCH_BIN_DIR/migrations.sha256"
    say "ready in $(since "$started"): http://localhost:${DEV_HTTP_PORT:-8000}/"
    say "logs: docker compose -f compose/dev.yml -f compose/watch.yml logs -f app tasks"
    say "watching ${watched[*]}; templates/ and static/ are served from the tree; Ctrl-C stops watching"
    say "stop the stack: docker compose -f compose/dev.yml down"
    cd "$repo"
    local args=() path
    for path in "${watched[@]}"; do [ -e "$path" ] && args+=(--watch "$path"); done
    # queue: a change during a build or restart runs one more step afterwards instead of killing this one.
    exec watchexec "${args[@]}" --postpone --on-busy-update queue --shell none -- bash "$repo/scripts/watch.sh" --rebuild
}

case ${1:-} in
    -h | --help) usage ;;
    --rebuild) preflight; rebuild ;;
    "") preflight; start ;;
    *) printf 'watch: unknown argument %s (see --help)\n' "$1" >&2; exit 2 ;;
esac
