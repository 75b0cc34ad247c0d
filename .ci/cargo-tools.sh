#!/usr/bin/env bash
# The e2e suite's tools that only crates.io carries, installed with `cargo install --locked` when missing (found in
# ~/.cargo/bin after that):
#   cargo-auditable  tests/e2e/run.sh builds the stand-ins' binaries with `cargo auditable build`, as the flake
#                    builds the images' (the crate list image scanners read; the suite's image contract checks it)
#   watchexec        the watch phase runs scripts/watch.sh, whose watcher holds the HTTP socket (--socket: 2.3 or
#                    later); a debug build: it only waits for file events, and builds in half the time
# .ci/run starts this in the background at its beginning (the Rust and Nix stages leave a core idle for much of
# their time) and waits for it before e2e; .ci/e2e.sh runs it too, a no-op when both are there.
# Usage: bash .ci/cargo-tools.sh [PHASES]   (PHASES: the e2e phases, default E2E_PHASES or tests/e2e/run.sh's default)
set -euo pipefail

CARGO_AUDITABLE_VERSION=0.7.7
WATCHEXEC_VERSION=2.8.0
# shellcheck disable=SC2016  # the sed pattern matches run.sh's literal text
phases=${1:-${E2E_PHASES:-$(sed -n 's/^export E2E_PHASES=${E2E_PHASES:-\(.*\)}$/\1/p' tests/e2e/run.sh)}}
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH="${HOME:-/root}/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "cargo-tools.sh: missing cargo (rustup: https://rustup.rs)" >&2; exit 1; }

install() { # what, then cargo install's arguments
    local what=$1 log
    shift
    log=$(mktemp /tmp/cargo-tools.XXXXXX.log)
    echo "cargo-tools.sh: installing $what (cargo install --locked $*)"
    if ! cargo install --quiet --locked "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "cargo-tools.sh: cargo install $* failed" >&2
        exit 1
    fi
    rm -f "$log"
}

if [ -z "${E2E_APP_BIN:-}" ] && ! cargo auditable --version >/dev/null 2>&1; then
    install "cargo-auditable $CARGO_AUDITABLE_VERSION" "cargo-auditable@$CARGO_AUDITABLE_VERSION"
fi
if grep -qw watch <<<"$phases" && ! watchexec --help 2>/dev/null | grep -q -- '--socket'; then
    install "watchexec-cli $WATCHEXEC_VERSION" --debug "watchexec-cli@$WATCHEXEC_VERSION"
fi
