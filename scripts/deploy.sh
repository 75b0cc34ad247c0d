#!/usr/bin/env bash
# Deploy VERSION to the running live stack (compose/live.yml) without a failed request; rolling back is deploying
# the previous version.
#
#   scripts/deploy.sh 0.2.0          # or, with Nix: nix run .#deploy -- 0.2.0
#   scripts/deploy.sh edge 0.2.0     # the edge only: a new image, or nginx/edge.conf (EDGE_CONF) changed
#
# The same idea as docker-rollout, for every service behind the published port:
#   1. the images of VERSION are there (pulled when not), and signed when REQUIRE_SIGNED_IMAGES=1;
#   2. `app migrate` of VERSION runs while the old version serves: migrations must be backward compatible
#      (expand now, contract one release later: README "Schema changes");
#   3. app, then httpd: as many new replicas as there are old ones start next to them (`up --no-recreate
#      --scale`); once all are healthy and nginx's DNS cache has seen them, the old ones are stopped one at a
#      time (SIGTERM/SIGQUIT: in-flight requests finish) and removed. nginx sends what an old replica refuses to
#      a new one. When a new replica does not become healthy, the new ones are removed, the old ones never stopped,
#      and the deploy fails;
#   4. tasks: one replica at a time, a new one healthy before an old one stops; the old one finishes or hands
#      back its task on SIGTERM, so no task is lost or run twice;
#   5. backup is recreated on the new version (it serves nobody, so it is not waited for). The edge is left as it
#      runs: EDGE_VERSION pins it to its current image, EDGE_PORTS_VERSION the edge-ports container that holds the
#      published ports, so the ports never close.
# `edge VERSION` replaces the edge alone, the same way: a new edge container of VERSION (with the edge config as
# it is now) starts in edge-ports' network namespace beside the old one, both nginx listening on the same ports
# (reuseport); once it is healthy the old one stops (SIGQUIT: it finishes its requests; the kernel hands the
# connections queued for it to the new one). EDGE_VERSION becomes VERSION.
# A first deploy (no stack running) is a plain `up --wait`.
# After a deploy, compose/.env (git-ignored; Compose reads it for every command on compose/live.yml) records what
# runs: APP_VERSION, EDGE_VERSION and those of the settings below that are set, so that `docker compose -f
# compose/live.yml logs|ps|down` and scripts/backup.sh work with nothing exported. Other lines in it are kept.
#
# Settings (environment): the variables of compose/live.yml (APP_IMAGE, HTTPD_IMAGE, SECRETS_DIR, ...);
#   COMPOSE_PROJECT_NAME  the stack's project (default: the file's name, docker-sample-live)
#   COMPOSE_PROFILES      `acme` runs the ACME client (acme/README.md), `offsite` the off-host copies of the
#                         backups (backup/README.md); both: `acme,offsite`
#   LIVE_FILE             the compose file (default compose/live.yml)
#   EDGE_CONF             the edge's nginx config (default nginx/edge.conf; relative paths from compose/)
#   DEPLOY_WAIT           seconds a new replica may take to become healthy (default 120)
#   NGINX_DNS_TTL         seconds nginx caches Docker's DNS answers (`resolver ... valid=` in nginx/httpd.conf and
#                         nginx/edge.conf; default 2): waited after new replicas start, before old ones stop
#   REQUIRE_SIGNED_IMAGES=1  refuse images whose keyless cosign signature does not verify; needs cosign, images
#                         from a registry and COSIGN_IDENTITY_REGEXP (the signing workflow's identity, e.g.
#                         '^https://github.com/OWNER/REPO/'); COSIGN_OIDC_ISSUER (default GitHub Actions')
# Exit status 0 when every service runs VERSION; non-zero, with a one-line reason, otherwise.
set -euo pipefail

say() { printf 'deploy: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

case "${1:-}" in
    -h | --help | "")
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        [ -n "${1:-}" ] && exit 0 || exit 2
        ;;
esac
mode=all
if [ "$1" = edge ]; then
    mode=edge
    version=${2:-}
    [ -n "$version" ] || die "usage: scripts/deploy.sh edge VERSION"
else
    version=$1
fi
case "$version" in
    latest) die "refused: deploy a version, not latest (a rollback needs to know what ran)" ;;
    *[!A-Za-z0-9._-]*) die "refused: '$version' is not an image tag" ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
file=${LIVE_FILE:-$root/compose/live.yml}
wait_s=${DEPLOY_WAIT:-120}
dns_ttl=${NGINX_DNS_TTL:-2}
app_image=${APP_IMAGE:-docker-sample/app}
httpd_image=${HTTPD_IMAGE:-docker-sample/httpd}
dc() { docker compose -f "$file" "$@"; }
recorded_settings=(COMPOSE_PROJECT_NAME COMPOSE_PROFILES APP_IMAGE HTTPD_IMAGE POSTGRES_IMAGE REDIS_IMAGE LIVE_BIND
    EDGE_PORTS_VERSION EDGE_CONF LIVE_ENV_FILE LIVE_HTTP_PORT LIVE_HTTPS_PORT RATE_LIMIT_TASKS RATE_LIMIT_BURST SECRETS_DIR BACKUP_SCHEDULE BACKUP_KEEP BACKUP_MAX_AGE BACKUP_DIR
    BACKUP_MAX_LAG BACKUP_WAL_SWITCH BACKUP_SLOT_MAX_SIZE BACKUP_REMOTE BACKUP_OFFSITE_EVERY BACKUP_REMOTE_KEEP_DAYS RCLONE_IMAGE)

# Writes compose/.env (next to the compose file: Compose reads it from the project directory): APP_VERSION, EDGE_VERSION
# and the recorded settings that are set now; keys it does not know, and known ones not set now, stay as they were.
record_deployment() { # version edge_version
    local env_file tmp key line
    env_file="$(dirname "$file")/.env"
    tmp=$(mktemp "$env_file.XXXXXX")
    {
        echo "# Written by scripts/deploy.sh: what is deployed on this host. Compose reads this file for every command"
        echo "# on the compose files of this directory; the next deploy rewrites the keys it sets."
        echo "APP_VERSION=$1"
        echo "EDGE_VERSION=$2"
        for key in "${recorded_settings[@]}"; do
            [ -n "${!key:-}" ] && echo "$key=${!key}"
        done
        if [ -f "$env_file" ]; then
            while IFS= read -r line; do
                key=${line%%=*}
                case "$line" in "#"* | "") continue ;; esac
                case " APP_VERSION EDGE_VERSION ${recorded_settings[*]} " in
                    *" $key "*) [ "$key" = APP_VERSION ] || [ "$key" = EDGE_VERSION ] || [ -n "${!key:-}" ] || echo "$line" ;;
                    *) echo "$line" ;;
                esac
            done <"$env_file"
        fi
    } >"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$env_file"
}
# shellcheck source=scripts/compose-status.sh
. "$root/scripts/compose-status.sh"

# --- 1. images ------------------------------------------------------------------------------------------------------
images=("$httpd_image:$version")
[ "$mode" = edge ] || images=("$app_image:$version" "${images[@]}")
for image in "${images[@]}"; do
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        say "pulling $image"
        docker pull --quiet "$image" >/dev/null || die "refused: image $image is not here and could not be pulled"
    fi
done
if [ "${REQUIRE_SIGNED_IMAGES:-0}" = 1 ]; then
    command -v cosign >/dev/null || die "refused: REQUIRE_SIGNED_IMAGES=1 but cosign is not installed"
    [ -n "${COSIGN_IDENTITY_REGEXP:-}" ] || die "refused: REQUIRE_SIGNED_IMAGES=1 needs COSIGN_IDENTITY_REGEXP"
    for image in "${images[@]}"; do
        cosign verify --certificate-identity-regexp "$COSIGN_IDENTITY_REGEXP" \
            --certificate-oidc-issuer "${COSIGN_OIDC_ISSUER:-https://token.actions.githubusercontent.com}" \
            "$image" >/dev/null 2>&1 || die "refused: $image has no valid signature from $COSIGN_IDENTITY_REGEXP"
        say "signature verified: $image"
    done
fi

tag_of() { # container id -> its image's tag
    local image
    image=$(docker inspect --format '{{.Config.Image}}' "$1")
    echo "${image##*:}"
}
edge=$(first_running edge 2>/dev/null)
ports_holder=$(first_running edge-ports 2>/dev/null)
if [ -n "$ports_holder" ]; then
    EDGE_PORTS_VERSION=$(tag_of "$ports_holder")
    export EDGE_PORTS_VERSION
fi
if [ "$mode" = edge ]; then
    [ -n "$edge" ] || die "no running edge: deploy a version first (scripts/deploy.sh VERSION)"
    [ -n "$ports_holder" ] || die "no edge-ports container: the edge is replaced inside its network namespace (compose/live.yml)"
    app=$(first_running app)
    [ -n "$app" ] || die "no running app: deploy a version first"
    APP_VERSION=$(tag_of "$app")
    export APP_VERSION EDGE_VERSION=$version
    old=$(dc ps --quiet edge)
    t=$(date +%s)
    if ! out=$(dc up --detach --no-deps --no-recreate --wait --wait-timeout "$wait_s" \
        --scale "edge=$(($(grep -c . <<<"$old") + 1))" edge 2>&1); then
        for id in $(dc ps --quiet edge); do grep -qx "$id" <<<"$old" || docker rm --force "$id" >/dev/null; done
        die "the new edge did not become healthy; removed it, the old one still serves: $(tail -n 1 <<<"$out")"
    fi
    for id in $old; do
        grace=$(docker inspect --format '{{or .Config.StopTimeout 30}}' "$id")
        docker stop --time "$grace" "$id" >/dev/null
        docker rm "$id" >/dev/null
    done
    record_deployment "$APP_VERSION" "$version"
    say "edge on $version ($(($(date +%s) - t)) s); app and the rest stay on $APP_VERSION"
    exit 0
fi

export APP_VERSION=$version
if [ -z "$edge" ]; then
    say "no running stack: starting it (up --wait)"
    export EDGE_VERSION=$version EDGE_PORTS_VERSION=$version
    dc up --detach --wait --wait-timeout "$wait_s"
    record_deployment "$version" "$version"
    say "deployed $version"
    exit 0
fi
EDGE_VERSION=$(tag_of "$edge")
export EDGE_VERSION

# --- 2. migrations (expand only) ------------------------------------------------------------------------------------
say "migrate ($version)"
out=$(one_off migrate 2>&1) || die "migrate failed, nothing else changed: $(tail -n 1 <<<"$out")"

# --- 3, 4. replicas -------------------------------------------------------------------------------------------------
running() { dc ps --quiet "$1"; }

# Removes the containers of $1 that are not in the list $2 (the new ones of a failed step).
remove_new() {
    local svc=$1 keep=$2 id
    for id in $(running "$svc"); do
        grep -qx "$id" <<<"$keep" || docker rm --force "$id" >/dev/null
    done
}

retire() { # container id: stop it gracefully (its stop signal and grace period) and remove it
    local id=$1 grace
    grace=$(docker inspect --format '{{or .Config.StopTimeout 30}}' "$id")
    docker stop --time "$grace" "$id" >/dev/null
    docker rm "$id" >/dev/null
}

# New replicas next to the old ones, all healthy, then the old ones go one at a time.
roll_batch() {
    local svc=$1 old n t id
    old=$(running "$svc")
    n=$(grep -c . <<<"$old" || true)
    [ "$n" -gt 0 ] || die "$svc has no running replica; start the stack with \`up --wait\` first"
    t=$(date +%s)
    if ! out=$(dc up --detach --no-deps --no-recreate --wait --wait-timeout "$wait_s" --scale "$svc=$((2 * n))" \
        "$svc" 2>&1); then
        remove_new "$svc" "$old"
        die "new $svc replicas did not become healthy; removed them, the old ones still serve: $(tail -n 1 <<<"$out")"
    fi
    sleep "$dns_ttl" # nginx asks Docker's DNS again after this long: from now on it knows the new replicas
    for id in $old; do retire "$id"; done
    say "$svc: $n replica(s) on $version ($(($(date +%s) - t)) s)"
}

# One new replica, healthy, then one old one stops; repeated.
roll_one_by_one() {
    local svc=$1 old keep n t id
    old=$(running "$svc")
    keep=$old
    n=$(grep -c . <<<"$old" || true)
    [ "$n" -gt 0 ] || die "$svc has no running replica; start the stack with \`up --wait\` first"
    t=$(date +%s)
    for id in $old; do
        if ! out=$(dc up --detach --no-deps --no-recreate --wait --wait-timeout "$wait_s" --scale "$svc=$((n + 1))" \
            "$svc" 2>&1); then
            remove_new "$svc" "$keep"
            die "a new $svc replica did not become healthy; removed it, the others still run: $(tail -n 1 <<<"$out")"
        fi
        keep=$(running "$svc")
        retire "$id"
    done
    say "$svc: $n replica(s) on $version ($(($(date +%s) - t)) s)"
}

roll_batch app
roll_batch httpd
roll_one_by_one tasks

# --- 5. the rest ----------------------------------------------------------------------------------------------------
out=$(dc up --detach --no-deps backup 2>&1) || die "backup did not start on $version: $(tail -n 1 <<<"$out")"
record_deployment "$version" "$EDGE_VERSION"
say "deployed $version (the edge stays on $EDGE_VERSION)"
