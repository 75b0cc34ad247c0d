#!/usr/bin/env bash
# CI stage for the Nix files, on a plain Debian machine where no flake can be built or
# evaluated (no binary cache, no GitHub): everything about them that can be checked here.
#
#   1. flake.lock pins exactly ../shared/nix/pins.json, and flake.nix's inputs and follows
#      agree with it (../shared/tools/check-flake-lock; skipped without it unless CI is set);
#   2. every tracked .nix file parses (nix-instantiate --parse);
#   3. every tracked .nix file is formatted (nixfmt --check; nixfmt-rs from crates.io, the
#      same formatter as the flake's `formatter` output and its nix-format check);
#   4. no dead code in them (deadnix --fail);
#   5. the GitHub workflow is valid YAML, and every flake output it names (`nix build .#X`,
#      `nix run .#X`, …) exists for its runner's system, evaluated with ../shared/nix-eval
#      (.ci/workflow-refs.py). With NIX_EVAL_LOG (.ci/run sets it), the references the nix eval
#      stage already passed are read from its log and only the others (other systems' outputs) are
#      evaluated: one evaluation for both stages.
#
# Installs what is missing: python3, python3-yaml (PyYAML; pip if apt has none) and nix-bin
# (Debian) for check-flake-lock, the workflow check and nix-instantiate; nixfmt-rs and deadnix
# with `cargo install --locked` at the versions below.
# Prints one timing line per step; runs every step, then exits non-zero if any failed.
# Run from anywhere inside the repository.
set -uo pipefail

NIXFMT_VERSION=0.5.3  # crate nixfmt_rs, binary nixfmt
DEADNIX_VERSION=1.3.1

top=$(git rev-parse --show-toplevel) || exit 1
cd "$top" || exit 1
export PATH="$HOME/.cargo/bin:$PATH"

failed=()

# step NAME COMMAND...: runs the command, prints "nix-lint: NAME ok|FAILED <seconds>".
step() {
  local name=$1 start status ms
  shift
  start=${EPOCHREALTIME/./}
  "$@"
  status=$?
  ms=$(((${EPOCHREALTIME/./} - start) / 1000))
  if [ "$status" -eq 0 ]; then
    printf 'nix-lint: %-14s ok     %d.%03ds\n' "$name" $((ms / 1000)) $((ms % 1000))
  else
    printf 'nix-lint: %-14s FAILED %d.%03ds (exit %d)\n' "$name" $((ms / 1000)) $((ms % 1000)) "$status"
    failed+=("$name")
  fi
  return "$status"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PACKAGE...: from the package lists as they are, else after an update.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

install_tools() {
  # python3 runs check-flake-lock; nix-bin brings nix-instantiate.
  command -v python3 >/dev/null || apt_install python3 || return 1
  command -v nix-instantiate >/dev/null || apt_install nix-bin || return 1
  python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml \
    || python3 -m pip install --quiet pyyaml || return 1
  # nixfmt-rs prints "nixfmt-rs X.Y.Z"; another nixfmt (the Haskell one) is not accepted, so
  # that the check here is the one the flake runs.
  if [ "$(nixfmt --version 2>/dev/null)" != "nixfmt-rs $NIXFMT_VERSION" ]; then
    cargo install --quiet --locked "nixfmt_rs@$NIXFMT_VERSION" || return 1
  fi
  if [ "$(deadnix --version 2>/dev/null)" != "deadnix $DEADNIX_VERSION" ]; then
    cargo install --quiet --locked "deadnix@$DEADNIX_VERSION" || return 1
  fi
}

# Tracked files, and new ones not yet committed (but not git-ignored ones).
mapfile -t nix_files < <(git ls-files --cached --others --exclude-standard '*.nix')

parse_all() {
  local file status=0
  for file in "${nix_files[@]}"; do
    nix-instantiate --parse "$file" >/dev/null || { echo "does not parse: $file" >&2; status=1; }
  done
  return "$status"
}

if step install-tools install_tools; then
  # Without ../shared (a user's clone, CI unset) the lock cannot be checked: .ci/run's first line says so.
  if [ -e ../shared/tools/check-flake-lock ] || [ -n "${CI:-}" ]; then
    step flake-lock python3 ../shared/tools/check-flake-lock
  else
    echo "nix-lint: flake-lock     SKIPPED (no pinned input list beside the clone)"
    lock_skipped=1
  fi
  step nix-parse parse_all
  step nixfmt nixfmt --check "${nix_files[@]}"
  step deadnix deadnix --fail "${nix_files[@]}"
  step workflow python3 .ci/workflow-refs.py
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "nix-lint: failed: ${failed[*]}" >&2
  exit 1
fi
if [ -n "${lock_skipped:-}" ]; then
  echo "nix-lint: all ${#nix_files[@]} .nix files and the workflow's references verified; flake.lock and the outputs' evaluation skipped"
else
  echo "nix-lint: all ${#nix_files[@]} .nix files, flake.lock and the workflow's flake outputs verified"
fi
