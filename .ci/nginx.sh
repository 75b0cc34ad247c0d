#!/usr/bin/env bash
# Builds the nginx that the e2e stand-in httpd image and the benchmark run: the version of the real image (nixpkgs'
# nginx 1.30), from a source tarball, with the modules nginx/httpd.conf uses. Built once and cached in
# target/nginx-<version>/ (reused while the tarball's sha256 and the configure flags are the same).
#
#   bash .ci/nginx.sh          progress on stderr; the LAST line on stdout is the path of the nginx binary
#
# The tarball: $NGINX_SRC when set, else ../shared/src/nginx-1.30.4.tar.gz (beside the repository in CI). A nginx
# 1.30.x source tarball from https://nginx.org/download/ works. Builds against Debian's libpcre2-dev and libssl-dev
# (installed with apt-get when missing, with gcc, make and libc6-dev; apt waits for a dpkg lock held by another
# process); no zlib: the configs compress nothing on the fly (the app does, and gzip_static serves the .gz files
# collectstatic writes). About 1 minute on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
say() { echo "nginx.sh: $*" >&2; }
die() { say "$*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

default_src=../shared/src/nginx-1.30.4.tar.gz
if [ -n "${NGINX_SRC:-}" ]; then
    src=$NGINX_SRC
    [ -f "$src" ] || die "NGINX_SRC=$src: no such file. Set NGINX_SRC to an nginx 1.30.x source tarball from https://nginx.org/download/ (e.g. nginx-1.30.4.tar.gz)."
elif [ -f "$default_src" ]; then
    src=$default_src
else
    die "no nginx source tarball. Download an nginx 1.30.x source tarball from https://nginx.org/download/ (e.g. nginx-1.30.4.tar.gz) and set NGINX_SRC to its path, e.g. NGINX_SRC=\$HOME/nginx-1.30.4.tar.gz bash .ci/nginx.sh"
fi
src=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")

top=$(tar -tzf "$src" 2>/dev/null | head -n1 | cut -d/ -f1) || true
version=${top#nginx-}
case $top in
    nginx-1.30.*) ;;
    *) die "$src is not an nginx 1.30.x source tarball (its top directory is '${top:-?}'); set NGINX_SRC to one from https://nginx.org/download/" ;;
esac

# What nginx/httpd.conf and nginx/edge.conf need, and the paths of the image: logs to stderr/stdout, everything
# written under /tmp (the root filesystem is read-only). realip, threads and gzip_static as in nixpkgs' build; TLS
# and HTTP/2 (the edge terminates HTTPS) and limit_req (its rate limit), which nixpkgs' build has too; fastcgi,
# uwsgi and scgi stay because the configs set their temp paths (so that the nixpkgs build, which has them, never
# writes to its read-only prefix). The rest is left out.
flags=(
    --prefix=/etc/nginx --sbin-path=/bin/nginx --conf-path=/etc/nginx/nginx.conf
    --error-log-path=stderr --http-log-path=/dev/stdout --pid-path=/tmp/nginx.pid --lock-path=/tmp/nginx.lock
    --http-client-body-temp-path=/tmp/nginx-client-body --http-proxy-temp-path=/tmp/nginx-proxy
    --http-fastcgi-temp-path=/tmp/nginx-fastcgi --http-uwsgi-temp-path=/tmp/nginx-uwsgi
    --http-scgi-temp-path=/tmp/nginx-scgi
    --with-threads --with-pcre-jit --with-http_gzip_static_module --with-http_realip_module
    --with-http_ssl_module --with-http_v2_module
    --without-http_gzip_module --without-http_ssi_module --without-http_userid_module --without-http_access_module
    --without-http_auth_basic_module --without-http_mirror_module --without-http_geo_module
    --without-http_split_clients_module --without-http_referer_module --without-http_grpc_module
    --without-http_memcached_module --without-http_limit_conn_module
    --without-http_empty_gif_module --without-http_browser_module --without-http_upstream_hash_module
    --without-http_upstream_ip_hash_module --without-http_upstream_least_conn_module
    --without-http_upstream_random_module --without-http_upstream_sticky --without-http-cache
    --with-cc-opt=-O2
)

out=$repo/target/nginx-$version
bin=$out/nginx
stamp="$(sha256sum "$src" | cut -d' ' -f1) ${flags[*]}"
if [ -x "$bin" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    say "reusing $bin (built from $(basename "$src"), same sha256 and flags)"
    echo "$bin"
    exit 0
fi

mkdir -p "$repo/target"
# One build at a time per checkout: a second caller waits, then reuses.
exec 9>"$repo/target/.nginx-build.lock"
flock 9
if [ -x "$bin" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    say "reusing $bin (built meanwhile)"
    echo "$bin"
    exit 0
fi

# ---- build dependencies (Debian) ------------------------------------------------------------------------------------
pkgs=()
command -v gcc >/dev/null || pkgs+=(gcc)
command -v make >/dev/null || pkgs+=(make)
[ -e /usr/include/stdio.h ] || pkgs+=(libc6-dev)
[ -e /usr/include/pcre2.h ] || pkgs+=(libpcre2-dev)
[ -e /usr/include/openssl/ssl.h ] || pkgs+=(libssl-dev)
if [ ${#pkgs[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
    say "installing ${pkgs[*]}"
    # Another process (a CI stage, another build) may be running apt: wait for its dpkg lock instead of failing.
    apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
    apt_install() {
        as_root env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" \
            >/tmp/nginx-apt.log 2>&1
    }
    # The package lists as they are first; `apt-get update` only when they do not have the packages.
    if ! apt_install; then
        as_root "${apt[@]}" update >/dev/null || die "apt-get update failed"
        apt_install || { tail -n 20 /tmp/nginx-apt.log >&2; die "apt-get install ${pkgs[*]} failed"; }
    fi
fi

# ---- configure, make ----------------------------------------------------------------------------------------------
work=$(mktemp -d /tmp/nginx-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
say "building nginx $version from $src in $work (about a minute; log $work/build.log)"
t0=$(date +%s)
tar -C "$work" -xzf "$src"
cd "$work/$top"
# Release tarballs have ./configure; a tarball of the source repository has it as auto/configure.
configure=./configure
[ -x "$configure" ] || configure=auto/configure
if ! { "$configure" "${flags[@]}" && make -j"$(nproc)"; } >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "building nginx $version failed"
fi
rm -rf "$out.new"
mkdir -p "$out.new"
install -m 755 -s objs/nginx "$out.new/nginx"
"$out.new/nginx" -V 2>"$out.new/nginx-V.txt" || die "the built nginx does not run"
printf '%s\n' "$stamp" > "$out.new/stamp"
rm -rf "$out"
mv "$out.new" "$out"
say "built $bin in $(($(date +%s) - t0)) s: $(head -n1 "$out/nginx-V.txt")"
echo "$bin"
