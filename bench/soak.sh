#!/usr/bin/env bash
# The deploy soak: the live stack (stand-in images, as in the end-to-end suite) flipped N -> N+1 -> N ... with
# scripts/deploy.sh under constant load from keep-alive clients; one FIGURE line per flip (requests/s, failed
# requests, p99 before and during the switch, tasks accepted, lost and run twice), and the same checks as the
# suite's deploy. Not part of CI: 20 flips take about half an hour.
#
#   bench/soak.sh                                     20 flips at 500 requests/s from 24 clients
#   SOAK_FLIPS=4 SOAK_RATE=600 SOAK_CLIENTS=32 bench/soak.sh
#   SOAK_KEYED=1 bench/soak.sh                        every POST with an Idempotency-Key (default: every second)
#   EDGE_CONF=/path/edge.conf bench/soak.sh           the stack's edge with another nginx config
#
# Needs what tests/e2e/run.sh needs (a Docker engine, Compose v2, cargo, PostgreSQL and Redis packages, nginx 1.30);
# removes everything it started. Exit status: 0 when every check passed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export E2E_PHASES=soak
export E2E_SOAK_FLIPS=${SOAK_FLIPS:-20} E2E_SOAK_RATE=${SOAK_RATE:-500} E2E_SOAK_CLIENTS=${SOAK_CLIENTS:-24} \
    E2E_SOAK_KEYED=${SOAK_KEYED:-0}
exec bash "$here/../tests/e2e/run.sh"
