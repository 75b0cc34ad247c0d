#!/usr/bin/env bash
# Fails when .sqlx/ (the offline query data committed for builds without a database) is stale: starts a throwaway
# PostgreSQL on a free loopback port, applies the migrations, and runs `cargo sqlx prepare --workspace --check` against it.
# `--check` does not see a query file that is there but empty (an interrupted prepare left four once): checked first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

empty=$(find .sqlx -name '*.json' -empty)
[ -z "$empty" ] || { echo "sqlx-fresh: empty query files in .sqlx/ (cargo sqlx prepare --workspace rewrites them): $empty" >&2; exit 1; }

bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || command -v initdb)")
dir=$(mktemp -d /tmp/sqlx-fresh.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
cleanup() { run_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

run_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >/dev/null
run_pg "$bin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/sqlx_check"
cargo sqlx database create
cargo sqlx migrate run
env -u SQLX_OFFLINE cargo sqlx prepare --workspace --check
