#!/usr/bin/env bash
# Installs what bench/run.sh needs on a Debian machine and is missing: wrk, postgresql-15 (server and psql),
# redis-server, python3. The packages' own daemons are kept from starting (the benchmark runs its own, on free
# loopback ports). nginx is not a package here: bench/run.sh takes the image's version from .ci/nginx.sh.
# Idempotent; prints what it installed. Not part of .ci/run: the benchmark is run by hand.
set -uo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pkgs=()
command -v wrk >/dev/null || pkgs+=(wrk)
[ -x /usr/lib/postgresql/15/bin/postgres ] || pkgs+=(postgresql-15)
command -v psql >/dev/null || pkgs+=(postgresql-client-15)
command -v redis-server >/dev/null || pkgs+=(redis-server)
command -v python3 >/dev/null || pkgs+=(python3)
[ ${#pkgs[@]} -gt 0 ] || { echo "bench-deps: everything is installed"; exit 0; }

command -v apt-get >/dev/null || { echo "bench-deps: missing ${pkgs[*]} and no apt-get to install them" >&2; exit 1; }
echo "bench-deps: installing ${pkgs[*]}"
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && made_policy=1
fi
as_root apt-get update -qq >/dev/null || { echo "bench-deps: apt-get update failed" >&2; exit 1; }
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
    >/tmp/bench-apt.log 2>&1
rc=$?
[ "$made_policy" = 1 ] && as_root rm -f "$policy"
if [ $rc -ne 0 ]; then tail -n 20 /tmp/bench-apt.log >&2; echo "bench-deps: apt-get install failed" >&2; exit 1; fi
echo "bench-deps: installed ${pkgs[*]}"
