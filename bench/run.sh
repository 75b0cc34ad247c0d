#!/usr/bin/env bash
# The benchmark: starts its own PostgreSQL, Redis, the release `app serve` + `app tasks` and Debian's
# nginx with nix/nginx.conf, all on loopback with free ports, measures with wrk, prints one table and writes JSON.
#
#   bench/run.sh                          full run (about 4 minutes), JSON to bench/results/latest.json
#   bench/run.sh --out /tmp/run.json      JSON elsewhere
#   bench/run.sh --quick                  short rows (3 s), fewer tasks: a smoke test of the harness, not figures
#   bench/run.sh --help                   every option
#
# Not part of the test command: it is a measurement. Exit status 0 when the run completed (whether or not the
# targets were met: each is printed PASS or MISS), 1 when the harness itself failed, 2 for a usage error.
# Missing tools (wrk, nginx-light, postgresql-15, redis-server) are installed by .ci/bench-deps.sh first.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

need_deps=0
command -v wrk >/dev/null || need_deps=1
[ -x "${NGINX:-/usr/sbin/nginx}" ] || need_deps=1
[ -x "${PG_BIN:-/usr/lib/postgresql/15/bin}/postgres" ] || need_deps=1
command -v redis-server >/dev/null || need_deps=1
command -v psql >/dev/null || need_deps=1
command -v python3 >/dev/null || need_deps=1
if [ "$need_deps" = 1 ]; then
    echo "bench: installing missing tools with .ci/bench-deps.sh" >&2
    bash "$repo/.ci/bench-deps.sh" || { echo "bench: could not install the tools the benchmark needs" >&2; exit 1; }
fi

exec python3 "$here/bench.py" "$@"
