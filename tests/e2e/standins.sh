#!/usr/bin/env bash
# Builds the e2e suite's STAND-IN images with `docker import` of a root filesystem tarball (no Dockerfile, no
# registry). They are test doubles only: the real docker-sample/app and docker-sample/httpd images are built by the
# Nix flake (nix2container), and production runs the official postgres and redis images.
#
#   tests/e2e/standins.sh build    build the images below (prints what it built)
#   tests/e2e/standins.sh remove   remove them again
#
# Environment (run.sh sets these; the defaults suit a manual run from the repository root):
#   APP_BIN         the cargo-built binary                 (default target/release/app)
#   HTTPD_START_BIN the httpd stand-in's entry point       (default: httpd-start beside APP_BIN, else
#                   target/release/httpd-start)
#   NGINX           the nginx binary of the httpd stand-in (default: built by .ci/nginx.sh, the image's version)
#   STANDIN_TAG     tag of the app and httpd stand-ins     (default: the version in Cargo.toml)
#   POSTGRES_IMAGE  name:tag of the postgres stand-in      (default docker-sample-test/postgres:15)
#   REDIS_IMAGE     name:tag of the redis stand-in         (default docker-sample-test/redis:7)
#   LEGO_IMAGE      name:tag of the lego stand-in          (default docker-sample-test/lego:4.9)
#   PEBBLE_IMAGE    name:tag of the pebble stand-in        (default docker-sample-test/pebble:2.4)
#   RCLONE_IMAGE    name:tag of the rclone stand-in        (default docker-sample-test/rclone:1.60)
#   E2E_REAL_IMAGES=1  no stand-ins for app and httpd: tag the images the flake built and `docker load`ed
#                   (docker-sample/app:<version>, docker-sample/httpd:<version>) as STANDIN_TAG instead
#
# Images:
#   docker-sample/app:TAG    applayer, laid out exactly as nix/image.json says (user, entrypoint, cmd, env, ports,
#                            workdir): /bin/app (+ the glibc libraries it links, copied from this machine),
#                            /etc/passwd, /etc/group, CA certificates, /tmp 1777. No shell.
#   docker-sample/httpd:TAG  staticlayer: nginx 1.30 (the image's version, built from source by .ci/nginx.sh) at
#                            /bin/nginx (+ the libraries it links, libssl included), the entry point httpd-start
#                            (cargo-built) at /bin/httpd-start, nginx/httpd.conf at /etc/nginx/nginx.conf,
#                            `app collectstatic` output at /srv/static. No shell.
#   POSTGRES_IMAGE           Debian's PostgreSQL 15 with an entrypoint honouring the official image's contract:
#                            POSTGRES_USER / POSTGRES_PASSWORD(_FILE) / POSTGRES_DB / POSTGRES_INITDB_ARGS /
#                            POSTGRES_HOST_AUTH_METHOD, PGDATA=/var/lib/postgresql/data, initdb on first start,
#                            listen_addresses='*' with password (scram-sha-256) auth, user postgres (uid 999),
#                            `pg_isready`, `pg_dump`/`pg_restore`/`pg_basebackup`/`pg_receivewal` and the tools of
#                            backup/service.sh (the backup service), SIGTERM handled as a fast shutdown (the official STOPSIGNAL is SIGINT;
#                            `docker import` cannot set STOPSIGNAL, so the entrypoint translates).
#   REDIS_IMAGE              Debian's redis-server 7: arguments from the command line (`--requirepass`,
#                            `--appendonly yes`, a leading `-` option implies redis-server), data in /data (WORKDIR),
#                            user redis (uid 999), protected mode off like the official build, `redis-cli`, `sh`.
#   LEGO_IMAGE               Debian's lego 4.9 laid out as the official goacme/lego image (/lego, /bin/sh, Alpine's
#                            /var/tmp 1777) with the tools acme/acme.sh uses: the acme service (acme phase).
#   RCLONE_IMAGE             Debian's rclone 1.60 laid out as the official rclone/rclone image (ENTRYPOINT rclone,
#                            /bin/sh) with the tools backup/offsite.sh uses: the offsite service, and the SFTP
#                            remote the backup phase copies to (`rclone serve sftp`).
#   PEBBLE_IMAGE             Debian's pebble 2.4, the ACME test CA, with a certificate made at build time for its
#                            own HTTPS (/etc/pebble/cert.pem) and http-01 validated on port 8080 (acme phase).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
image_json="$repo/nix/image.json"

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
APP_BIN=${APP_BIN:-$repo/target/release/app}
STANDIN_TAG=${STANDIN_TAG:-$version}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-docker-sample-test/postgres:15}
REDIS_IMAGE=${REDIS_IMAGE:-docker-sample-test/redis:7}
LEGO_IMAGE=${LEGO_IMAGE:-docker-sample-test/lego:4.9}
PEBBLE_IMAGE=${PEBBLE_IMAGE:-docker-sample-test/pebble:2.4}
RCLONE_IMAGE=${RCLONE_IMAGE:-docker-sample-test/rclone:1.60}
PG_BIN=/usr/lib/postgresql/15/bin
PG_LIB=/usr/lib/postgresql/15/lib
PG_SHARE=/usr/share/postgresql/15

# jq-free reading of nix/image.json: `json app.image` prints one value.
json() { python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v if isinstance(v,(str,int)) else json.dumps(v))' "$image_json" "$1"; }

app_ref() { echo "$(json app.image):$STANDIN_TAG"; }
httpd_ref() { echo "$(json httpd.image):$STANDIN_TAG"; }

# `docker import --change` lines for one section of nix/image.json (user, entrypoint, cmd, env, ports, workdir).
changes_for() {
    python3 - "$image_json" "$1" "$repo" <<'EOF'
import json, re, subprocess, sys
s = json.load(open(sys.argv[1]))[sys.argv[2]]
repo = sys.argv[3]
cargo = open(repo + "/Cargo.toml").read()
def git(*args):
    p = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""
rev = git("rev-parse", "HEAD") or "unknown"
if rev != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
    rev += "-dirty"
labels = {
    "org.opencontainers.image.source": re.search(r'^repository\s*=\s*"([^"]+)"', cargo, re.M).group(1),
    "org.opencontainers.image.revision": rev,
    "org.opencontainers.image.version": re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1),
}
out = []
out.append("USER %d:%d" % (s["user"]["uid"], s["user"]["gid"]))
out.append("ENTRYPOINT " + json.dumps(s["entrypoint"]))
if s.get("cmd"):
    out.append("CMD " + json.dumps(s["cmd"]))
out.append("WORKDIR " + s["workdir"])
for k, v in sorted(s.get("env", {}).items()):
    out.append("ENV %s=%s" % (k, v))
for p in s.get("ports", []):
    out.append("EXPOSE %d/tcp" % p)
out.append("LABEL org.opencontainers.image.description=e2e-stand-in-not-for-production")
# The OCI labels the flake gives the real images (nix/images.nix): source and version from Cargo.toml, the revision
# of the tree (`-dirty` when it has uncommitted changes, like the flake's dirtyRev).
for k, v in labels.items():
    out.append("LABEL %s=%s" % (k, v))
print("\n".join(out))
EOF
}

# Copy files (following symlinks, keeping their absolute paths) and every shared library they link into ROOT.
add_files() {
    local root=$1 f lib; shift
    for f in "$@"; do
        [ -e "$f" ] || { echo "standins: missing $f on this machine" >&2; return 1; }
        install -D -m "$(stat -Lc %a "$f")" "$f" "$root$f"
        # ldd prints "name => /path (addr)" and "/lib64/ld-linux-x86-64.so.2 (addr)"; static files print nothing.
        for lib in $(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
            [ -e "$root$lib" ] || install -D -m 755 "$lib" "$root$lib"
        done
    done
}

# Copy one binary to DEST inside ROOT, and the shared libraries it links (at their own paths, as add_files does).
add_binary() { # ROOT SRC DEST
    local root=$1 src=$2 dest=$3 lib
    [ -x "$src" ] || { echo "standins: missing $src" >&2; return 1; }
    install -D -m 755 "$src" "$root$dest"
    for lib in $(ldd "$src" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$root$lib" ] || install -D -m 755 "$lib" "$root$lib"
    done
}

base_rootfs() { # ROOT: /tmp 1777, /etc/{passwd,group,nsswitch.conf}
    local root=$1
    mkdir -p "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
}

import_rootfs() { # ROOT REF CHANGES...
    local root=$1 ref=$2; shift 2
    local args=() c
    for c in "$@"; do args+=(--change "$c"); done
    tar -C "$root" --numeric-owner -c . | docker import "${args[@]}" - "$ref" >/dev/null
    echo "standins: built $ref ($(du -sh "$root" | cut -f1))"
}

# E2E_REAL_IMAGES=1: the flake's image, already loaded, under the tag the suite uses (removing that tag later
# leaves the loaded image alone).
use_loaded() { # SECTION of nix/image.json
    local image; image=$(json "$1.image")
    docker image inspect "$image:$version" >/dev/null 2>&1 \
        || { echo "standins: $image:$version is not loaded (nix run .#load)" >&2; exit 1; }
    docker tag "$image:$version" "$image:$STANDIN_TAG"
    echo "standins: using the loaded $image:$version as $image:$STANDIN_TAG"
}

build_app() {
    local root=$1 uid gid name group home
    if [ "${E2E_REAL_IMAGES:-0}" = 1 ]; then use_loaded app; return; fi
    uid=$(json app.user.uid); gid=$(json app.user.gid); name=$(json app.user.name)
    group=$(json app.user.group); home=$(json app.user.home)
    base_rootfs "$root"
    add_files "$root" "$APP_BIN"
    if [ "$APP_BIN" != "$root$(json app.binary)" ]; then
        mkdir -p "$root$(dirname "$(json app.binary)")"
        mv "$root$APP_BIN" "$root$(json app.binary)"
    fi
    printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:%s:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
        "$name" "$uid" "$gid" "$name" "$home" > "$root/etc/passwd"
    printf 'root:x:0:\n%s:x:%s:\nnogroup:x:65534:\n' "$group" "$gid" > "$root/etc/group"
    install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    local changes; mapfile -t changes < <(changes_for app)
    import_rootfs "$root" "$(app_ref)" "${changes[@]}"
}

build_httpd() {
    local root=$1 uid gid name group home static
    if [ "${E2E_REAL_IMAGES:-0}" = 1 ]; then use_loaded httpd; return; fi
    uid=$(json httpd.user.uid); gid=$(json httpd.user.gid); name=$(json httpd.user.name)
    group=$(json httpd.user.group); home=$(json httpd.user.home); static=$(json httpd.static_root)
    if [ -z "${NGINX:-}" ]; then
        NGINX=$(bash "$repo/.ci/nginx.sh" | tail -n1) || { echo "standins: no nginx for the httpd stand-in" >&2; return 1; }
    fi
    # The entry point: the httpd-start cargo built beside the app, else the tree's release build (a version N+1
    # app built from a copy of the tree has none beside it; httpd-start is the same for both versions).
    local launcher=${HTTPD_START_BIN:-}
    if [ -z "$launcher" ]; then
        launcher=$(dirname "$APP_BIN")/httpd-start
        [ -x "$launcher" ] || launcher=$repo/target/release/httpd-start
    fi
    [ -x "$launcher" ] || { echo "standins: $launcher not found: cargo build --release --bin httpd-start" >&2; return 1; }
    base_rootfs "$root"
    add_binary "$root" "$NGINX" "$(json httpd.binary)"
    add_binary "$root" "$launcher" "$(json httpd.launcher)"
    install -D -m 644 "$repo/$(json httpd.config_source)" "$root$(json httpd.config)"
    mkdir -p "$root$static"
    # The image's writable directories (/tmp, and /srv/static-releases: a fresh volume mounted there takes its
    # mode, so the non-root nginx can write to it), 1777 like the flake's.
    local dir
    for dir in $(json httpd.writable | python3 -c 'import json,sys; print(*json.load(sys.stdin))'); do
        mkdir -p "$root$dir"; chmod 1777 "$root$dir"
    done
    "$APP_BIN" collectstatic "$root$static" >/dev/null
    chmod -R a+rX,go-w "$root$static"
    printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:%s:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
        "$name" "$uid" "$gid" "$name" "$home" > "$root/etc/passwd"
    printf 'root:x:0:\n%s:x:%s:\nnogroup:x:65534:\n' "$group" "$gid" > "$root/etc/group"
    local changes; mapfile -t changes < <(changes_for httpd)
    import_rootfs "$root" "$(httpd_ref)" "${changes[@]}"
}

shell_tools=(/bin/dash /usr/bin/id /usr/bin/mkdir /usr/bin/chmod /usr/bin/chown /usr/bin/cat /usr/bin/rm /usr/bin/ls
             /usr/bin/setpriv /usr/bin/env /usr/bin/sleep
             /usr/bin/cut /usr/bin/date /usr/bin/dd /usr/bin/mv /usr/bin/sort /usr/bin/tail /usr/bin/tr /usr/bin/wc)

add_shell() { # ROOT: dash as /bin/sh plus the few tools the entrypoints use
    local root=$1
    add_files "$root" "${shell_tools[@]}"
    ln -sf dash "$root/bin/sh"
    mkdir -p "$root/usr/local/bin"
}

build_postgres() {
    local root=$1 f
    base_rootfs "$root"
    add_shell "$root"
    add_files "$root" "$PG_BIN/postgres" "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/pg_isready" "$PG_BIN/psql" \
        "$PG_BIN/pg_dump" "$PG_BIN/pg_restore" "$PG_BIN/pg_basebackup" "$PG_BIN/pg_receivewal"
    # The rest of what backup/service.sh, wal.sh and pitr.sh use, which the official (Debian) image has.
    add_files "$root" /usr/bin/awk /usr/bin/cp /usr/bin/dirname /usr/bin/du /usr/bin/grep /usr/bin/gzip /usr/bin/head \
        /usr/bin/sed /usr/bin/tar /usr/bin/touch
    for f in "$PG_LIB"/*.so; do
        case $f in */llvmjit*) continue ;; esac   # JIT would pull in LLVM (100+ MB); jit=off below
        add_files "$root" "$f"
    done
    mkdir -p "$root$(dirname "$PG_SHARE")"
    cp -a "$PG_SHARE" "$root$PG_SHARE"
    cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
    mkdir -p "$root/usr/lib/locale"
    cp -a /usr/lib/locale/C.utf8 "$root/usr/lib/locale/C.utf8"   # initdb --locale=C.UTF-8
    printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\npostgres:x:999:\n' > "$root/etc/group"
    mkdir -p "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
    chown -R 999:999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
    chmod 700 "$root/var/lib/postgresql/data"
    chmod 3777 "$root/var/run/postgresql"
    install -m 755 /dev/stdin "$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# postgres STAND-IN entrypoint (tests only; production uses the official image). Follows the official image's
# documented contract: POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE, POSTGRES_USER (default postgres), POSTGRES_DB
# (default $POSTGRES_USER), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), PGDATA.
set -eu
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
[ "$1" = postgres ] || exec "$@"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

file_env() { # VAR: VAR or VAR_FILE (not both)
    eval "v=\${$1:-}; f=\${$1_FILE:-}"
    if [ -n "$v" ] && [ -n "$f" ]; then echo "error: both $1 and $1_FILE are set" >&2; exit 1; fi
    if [ -n "$f" ]; then v=$(cat "$f"); fi
    eval "$1=\$v"
    unset "$1_FILE"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    file_env POSTGRES_PASSWORD
    : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        echo "error: database is uninitialized and superuser password is not specified (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE)" >&2
        exit 1
    fi
    echo "stand-in postgres: initializing $PGDATA for user $POSTGRES_USER, database $POSTGRES_DB"
    umask 077
    pw=/tmp/.pgpass.$$
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pw"
    printf "\nlisten_addresses = '*'\njit = off\n" >> "$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "stand-in postgres: init done"
fi
unset POSTGRES_PASSWORD

# SIGTERM (docker stop) becomes a fast shutdown (SIGINT), as the official image's STOPSIGNAL SIGINT does.
"$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null' TERM INT
trap 'kill -QUIT "$pid" 2>/dev/null' QUIT
status=0
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" && status=0 || status=$?
done
exit "$status"
EOF
    import_rootfs "$root" "$POSTGRES_IMAGE" \
        "USER root" \
        "ENV PATH=/usr/local/bin:$PG_BIN:/usr/bin:/bin" "ENV PGDATA=/var/lib/postgresql/data" "ENV PG_MAJOR=15" \
        "ENV LANG=C.UTF-8" \
        'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["postgres"]' "EXPOSE 5432/tcp" \
        "VOLUME /var/lib/postgresql/data" "WORKDIR /" \
        "LABEL org.opencontainers.image.description=e2e-stand-in-not-for-production"
}

build_redis() {
    local root=$1
    base_rootfs "$root"
    add_shell "$root"
    add_files "$root" /usr/bin/redis-server /usr/bin/redis-cli
    printf 'root:x:0:0:root:/root:/bin/sh\nredis:x:999:999:Redis:/data:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\nredis:x:999:\n' > "$root/etc/group"
    mkdir -p "$root/data"
    chown 999:999 "$root/data"
    install -m 755 /dev/stdin "$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# redis STAND-IN entrypoint (tests only; production uses the official image): like the official one, a first
# argument that is an option or a .conf file means redis-server; as root it drops to the redis user.
set -eu
case "${1:-}" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data 2>/dev/null || true
        exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
    fi
    # The official image is built with protected mode off (the container network is the boundary); the Debian
    # binary is not, so say it first: options given later on the command line still win.
    shift
    case "${1:-}" in
        ""|--*) set -- redis-server --protected-mode no "$@" ;;
        *) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;;
    esac
fi
exec "$@"
EOF
    import_rootfs "$root" "$REDIS_IMAGE" \
        "USER root" "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
        'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["redis-server"]' "EXPOSE 6379/tcp" \
        "VOLUME /data" "WORKDIR /data" \
        "LABEL org.opencontainers.image.description=e2e-stand-in-not-for-production"
}

# lego stand-in, laid out as the official goacme/lego image (Alpine): /lego (here Debian's lego 4.9, the CLI of v4),
# ENTRYPOINT ["/lego"], runs as root unless told otherwise, /bin/sh with the few tools acme/acme.sh uses, CA
# certificates, /tmp and /var/tmp 1777 (Alpine's modes: compose/live.yml's acme service relies on /var/tmp's for a
# fresh volume), no /srv/acme.
build_lego() {
    local root=$1
    base_rootfs "$root"
    add_shell "$root"
    add_binary "$root" /usr/bin/lego /lego
    install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$root/var/tmp" "$root/srv"
    chmod 1777 "$root/var/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    import_rootfs "$root" "$LEGO_IMAGE" \
        "USER root" "ENV PATH=/usr/local/bin:/usr/bin:/bin" 'ENTRYPOINT ["/lego"]' "EXPOSE 80/tcp" "WORKDIR /" \
        "LABEL org.opencontainers.image.description=e2e-stand-in-not-for-production"
}

# rclone stand-in, laid out as the official rclone/rclone image (Alpine): rclone on the PATH as the entry point,
# runs as root unless told otherwise, /bin/sh with the tools backup/offsite.sh uses, CA certificates, WORKDIR /data.
build_rclone() {
    local root=$1
    base_rootfs "$root"
    add_shell "$root"
    add_files "$root" /usr/bin/grep /usr/bin/head /usr/bin/sed /usr/bin/find
    add_binary "$root" /usr/bin/rclone /usr/local/bin/rclone
    install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$root/data"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    import_rootfs "$root" "$RCLONE_IMAGE" \
        "USER root" "ENV PATH=/usr/local/bin:/usr/bin:/bin" 'ENTRYPOINT ["rclone"]' "WORKDIR /data" \
        "LABEL org.opencontainers.image.description=e2e-stand-in-not-for-production"
}

# pebble, the ACME test CA (Debian's pebble 2.4), for the acme phase: its own HTTPS (the ACME API on 14000, the
# management API on 15000: /roots/0, /intermediates/0) with a certificate made here for the name `pebble` (the
# service's name on the test network; also localhost and 127.0.0.1), at /etc/pebble/cert.pem: the CA file lego
# must trust (LEGO_CA_CERTIFICATES). http-01 is validated on port 8080 (the edge's HTTP port in its container),
# without pebble's random 0-15 s pause (PEBBLE_VA_NOSLEEP) and without its 5 % of refused nonces (lego retries
# them, but a test should not depend on that). Validation stays real: PEBBLE_VA_ALWAYS_VALID is not set.
# Debian's pebble 2.4 takes the port from its config file ("httpPort"), not from a command-line flag.
build_pebble() {
    local root=$1
    base_rootfs "$root"
    add_binary "$root" /usr/bin/pebble /usr/bin/pebble
    mkdir -p "$root/etc/pebble"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=pebble \
        -addext "subjectAltName=DNS:pebble,DNS:localhost,IP:127.0.0.1" \
        -keyout "$root/etc/pebble/key.pem" -out "$root/etc/pebble/cert.pem" 2>/dev/null
    chmod 644 "$root/etc/pebble/key.pem" "$root/etc/pebble/cert.pem"   # a test CA's throwaway key
    cat > "$root/etc/pebble/config.json" <<'JSON'
{
  "pebble": {
    "listenAddress": "0.0.0.0:14000",
    "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/etc/pebble/cert.pem",
    "privateKey": "/etc/pebble/key.pem",
    "httpPort": 8080,
    "tlsPort": 8443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    import_rootfs "$root" "$PEBBLE_IMAGE" \
        "USER 65534:65534" "ENV PEBBLE_VA_NOSLEEP=1" "ENV PEBBLE_WFE_NONCEREJECT=0" \
        'ENTRYPOINT ["/usr/bin/pebble", "-config", "/etc/pebble/config.json"]' "EXPOSE 14000/tcp" "EXPOSE 15000/tcp" \
        "WORKDIR /" "LABEL org.opencontainers.image.description=e2e-stand-in-not-for-production"
}

cmd=${1:-build}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(postgres redis app httpd lego pebble rclone)

case $cmd in
build)
    work=$(mktemp -d /tmp/standins.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    for t in "${targets[@]}"; do
        case $t in
            app|httpd) [ "${E2E_REAL_IMAGES:-0}" = 1 ] || [ -x "$APP_BIN" ] || { echo "standins: $APP_BIN not found: cargo build --release --bin app" >&2; exit 1; } ;;
        esac
        mkdir -p "$work/$t"
        "build_$t" "$work/$t"
    done
    ;;
remove)
    for t in "${targets[@]}"; do
        case $t in
            app) ref=$(app_ref) ;; httpd) ref=$(httpd_ref) ;; postgres) ref=$POSTGRES_IMAGE ;; redis) ref=$REDIS_IMAGE ;;
            lego) ref=$LEGO_IMAGE ;; pebble) ref=$PEBBLE_IMAGE ;; rclone) ref=$RCLONE_IMAGE ;;
            *) echo "standins: unknown image $t" >&2; exit 2 ;;
        esac
        docker image rm -f "$ref" >/dev/null 2>&1 && echo "standins: removed $ref" || true
    done
    ;;
refs)
    echo "app=$(app_ref) httpd=$(httpd_ref) postgres=$POSTGRES_IMAGE redis=$REDIS_IMAGE lego=$LEGO_IMAGE pebble=$PEBBLE_IMAGE rclone=$RCLONE_IMAGE"
    ;;
*)
    echo "usage: $0 build|remove|refs [postgres redis app httpd lego pebble rclone]" >&2; exit 2 ;;
esac
