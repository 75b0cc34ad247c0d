#!/usr/bin/env bash
# The benchmark: starts its own PostgreSQL, Redis, the release `app serve` + `app tasks` and nginx 1.30 (the
# image's version) with nginx/httpd.conf, all on loopback with free ports, measures with wrk, prints one table and
# writes JSON.
#
#   bench/run.sh                          full run (about 4 minutes), JSON to bench/results/latest.json
#   bench/run.sh --out /tmp/run.json      JSON elsewhere
#   bench/run.sh --quick                  short rows (3 s), fewer tasks: a smoke test of the harness, not figures
#   bench/run.sh --help                   every option
#
# Not part of the test command: it is a measurement. Exit status 0 when the run completed (whether or not the
# targets were met: each is printed PASS or MISS), 1 when the harness itself failed, 2 for a usage error.
# Missing tools (wrk, postgresql-15, redis-server) are installed by .ci/bench-deps.sh first. nginx is NGINX=path when
# given, else built from source once by .ci/nginx.sh (about a minute; set NGINX_SRC to an nginx 1.30.x source
# tarball from nginx.org when it asks).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

need_deps=0
command -v wrk >/dev/null || need_deps=1
[ -x "${PG_BIN:-/usr/lib/postgresql/15/bin}/postgres" ] || need_deps=1
command -v redis-server >/dev/null || need_deps=1
command -v psql >/dev/null || need_deps=1
command -v python3 >/dev/null || need_deps=1
if [ "$need_deps" = 1 ]; then
    echo "bench: installing missing tools with .ci/bench-deps.sh" >&2
    bash "$repo/.ci/bench-deps.sh" || { echo "bench: could not install the tools the benchmark needs" >&2; exit 1; }
fi

case " $* " in *" --help "*|*" -h "*) exec python3 "$here/bench.py" "$@" ;; esac
if [ -z "${NGINX:-}" ]; then
    NGINX=$(bash "$repo/.ci/nginx.sh" | tail -n1) \
        || { echo "bench: no nginx: set NGINX_SRC to an nginx 1.30.x source tarball from https://nginx.org/download/, or NGINX to an nginx 1.30 binary" >&2; exit 1; }
fi
[ -x "$NGINX" ] || { echo "bench: NGINX=$NGINX is not an executable" >&2; exit 1; }
export NGINX
exec python3 "$here/bench.py" "$@"
