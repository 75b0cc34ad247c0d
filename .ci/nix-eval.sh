#!/usr/bin/env bash
# CI stage: evaluate every flake output for real with ../shared/nix-eval (Nix 2.30.5, the pinned inputs and a
# stand-in nixpkgs; evaluation only, nothing is built: ../shared/nix-eval/README.md says what that proves).
# Fails on any failed output. Without the kit (a user's clone) the stage says so and is skipped; with CI=true a
# missing kit is a failure, so CI never passes without having evaluated the flake.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
kit="$top/../shared/nix-eval/eval"

if [ ! -x "$kit" ]; then
    if [ "${CI:-}" = true ]; then
        echo "nix-eval: FAILED: the evaluation kit $kit is missing (CI=true requires it)" >&2
        exit 1
    fi
    echo "nix-eval: SKIPPED: no evaluation kit at $kit; nothing was evaluated"
    exit 0
fi

# NIX_EVAL_LOG=FILE keeps the kit's output there: .ci/workflow-refs.py (the nix lint stage) reads it instead of
# evaluating the same outputs again.
log=${NIX_EVAL_LOG:-$(mktemp)}
[ -n "${NIX_EVAL_LOG:-}" ] || trap 'rm -f "$log"' EXIT
status=0
# ALL_SYSTEMS=1 adds `nix flake check --no-build --all-systems` (all four systems; about 15 s more).
ALL_SYSTEMS=1 "$kit" "$top" >"$log" 2>&1 || status=$?
# One line per output is the kit's own format; keep the failures and the summary visible in CI's log.
grep -E '^(FAIL|PASS)' "$log" | grep -c '^PASS' | sed 's/^/nix-eval: outputs passed: /'
grep -E -A6 '^FAIL' "$log" || true
tail -n 1 "$log" | sed 's/^/nix-eval: /'
if [ "$status" -ne 0 ]; then
    echo "nix-eval: FAILED (exit $status); the kit's full output follows" >&2
    cat "$log" >&2
    exit 1
fi
