#!/usr/bin/env bash
# Installs Mozilla's HTTP Observatory scanner (npm @mdn/mdn-http-observatory, the exact tree of package-lock.json
# beside this script) for tests/e2e/observatory.py, into $OBSERVATORY_DIR (default target/observatory, git-ignored).
# Skipped when that directory already holds this lock file's tree. Needs Node.js >= 20 and npm (the machine's; on
# Debian 12, Debian's nodejs is 18: too old) and the npm registry.
#
#   bash tests/e2e/observatory/install.sh      the LAST line on stdout is the scanner's package directory
#
# `npm ci --ignore-scripts`: the package's own install script would download two files at install time, the HSTS
# preload list and a CA bundle; neither is wanted here. The preload list is written empty ({}): the stack's test
# host names are on no preload list, and an empty list means no test passes by being preloaded (the scanner only
# reads it to give preloaded sites credit). The CA bundle is not used: observatory.py gives Node the stack's test CA
# (NODE_EXTRA_CA_CERTS) and runs scan.mjs, not the package's CLI wrapper (which would replace that variable).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
dir=${OBSERVATORY_DIR:-$repo/target/observatory}
pkg=$dir/node_modules/@mdn/mdn-http-observatory
say() { echo "observatory/install.sh: $*" >&2; }
die() { say "$*"; exit 1; }

command -v node >/dev/null || die "no node: install Node.js >= 20 with npm (e.g. the nodejs package of NodeSource, or Debian 13's nodejs + npm)"
command -v npm >/dev/null || die "no npm: install npm for Node.js $(node --version)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "node $(node --version) is too old: the scanner needs Node.js >= 20"

stamp_want=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp_want" ] && [ -f "$pkg/src/index.js" ] \
   && [ -f "$pkg/conf/hsts-preload.json" ]; then
    say "up to date in $dir"
    echo "$pkg"
    exit 0
fi

say "installing @mdn/mdn-http-observatory into $dir (npm ci --ignore-scripts)"
mkdir -p "$dir"
rm -f "$dir/.stamp"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
log=$dir/npm-install.log
if ! (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=warn) >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "npm ci failed (log: $log)"
fi
[ -f "$pkg/src/index.js" ] || die "npm ci succeeded but $pkg/src/index.js is missing"
echo '{}' > "$pkg/conf/hsts-preload.json"
echo "$stamp_want" > "$dir/.stamp"
say "installed $(node -p "require('$pkg/package.json').version") in $dir"
echo "$pkg"
