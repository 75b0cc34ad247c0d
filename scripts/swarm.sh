#!/usr/bin/env bash
# The stack of compose/stack.yml on a Docker Swarm of one or more machines: deploy a version, put the whole stack
# back on the version before, replace the PostgreSQL password. Run it where the docker CLI reaches a manager
# (on a manager, or DOCKER_HOST=ssh://manager).
#
#   scripts/swarm.sh deploy 0.2.0          # docker stack deploy of VERSION, then waits until every service runs it
#   scripts/swarm.sh rollback              # every service back on the version deployed before (one stack deploy)
#   scripts/swarm.sh rotate-db-password    # a new PostgreSQL password, under a new secret name, 0 failed requests
#   scripts/swarm.sh status                # each service: its replicas and the versions they run
#
# deploy: `docker stack deploy --with-registry-auth` of VERSION with the settings below, then waits until every
#   service runs its replica count on VERSION (the images are REGISTRY/app:VERSION and REGISTRY/httpd:VERSION, as
#   `nix run .#push -- REGISTRY_PREFIX VERSION` pushed them). Every service is updated at once, each one replica at
#   a time, the new one healthy before an old one stops (update_config in compose/stack.yml); an update whose new
#   replica fails rolls that service back by itself.
# rollback: the same for the version deployed before the current one (recorded by deploy).
# rotate-db-password: a new password (openssl rand -hex 32) becomes the Swarm secret STACK_postgres_password_<time>
#   (secrets are immutable: a rotation is a new name). First app, tasks and backup are updated, one replica at a
#   time, the new one healthy before an old one stops: the new secret as /run/secrets/postgres_password and the
#   old one as /run/secrets/postgres_password_previous (POSTGRES_PASSWORD_PREVIOUS_FILE). Their processes log in
#   with whichever of the two PostgreSQL takes, and switch when it refuses the one they use. Then PostgreSQL's role
#   gets the new password (ALTER ROLE, by a one-off service on the backend network with both secrets mounted).
#   Connections open stay valid (a password is checked when a connection is made), and every connection opened
#   after that uses the new password: no request fails. The new password then replaces
#   SECRETS_DIR/postgres_password and POSTGRES_PASSWORD_SECRET is recorded; the next deploy drops the previous
#   one. The db service keeps the secret it was created with: PostgreSQL reads it only to initialise an empty data
#   volume, and updating db restarts it; the next `deploy` moves it to the new name (a restart of PostgreSQL: a
#   few seconds of 503s on routes that need the database). The old secret can be removed once nothing mounts it
#   (`docker secret rm`).
#
# Settings (environment; each one set is recorded in SWARM_ENV_FILE by deploy, and read back by every command, so
# the next command needs none of them again): the variables of compose/stack.yml (REGISTRY, POSTGRES_IMAGE,
# REDIS_IMAGE, SECRETS_DIR, LIVE_ENV_FILE, EDGE_PORT, EDGE_HTTPS_PORT, EDGE_PUBLISH_MODE, EDGE_REPLICAS,
# HTTPD_REPLICAS, RATE_LIMIT_TASKS, RATE_LIMIT_BURST, POSTGRES_PASSWORD_SECRET, BACKUP_*), and
#   STACK_NAME      the stack (default docker-sample)
#   STACK_FILE      the stack file (default compose/stack.yml)
#   SWARM_ENV_FILE  where the settings are recorded (default compose/.swarm.env, git-ignored)
#   DEPLOY_WAIT     seconds every service may take to run the new version (default 300)
# Exit status 0 when every service runs what was asked; non-zero, with a one-line reason, otherwise.
set -euo pipefail

say() { printf 'swarm: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    deploy | rollback | rotate-db-password | status) cmd=$1; shift ;;
    *) usage; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_file=${SWARM_ENV_FILE:-$root/compose/.swarm.env}
settings=(STACK_NAME STACK_FILE REGISTRY POSTGRES_IMAGE REDIS_IMAGE SECRETS_DIR LIVE_ENV_FILE EDGE_PORT
    EDGE_HTTPS_PORT EDGE_PUBLISH_MODE EDGE_REPLICAS HTTPD_REPLICAS RATE_LIMIT_TASKS RATE_LIMIT_BURST POSTGRES_PASSWORD_SECRET
    BACKUP_SCHEDULE BACKUP_KEEP BACKUP_MAX_AGE BACKUP_MAX_LAG BACKUP_WAL_SWITCH BACKUP_SLOT_MAX_SIZE APP_VERSION PREVIOUS_VERSION)
# The recorded settings, for those not set now (what is set now wins).
if [ -f "$env_file" ]; then
    while IFS= read -r line; do
        case "$line" in "#"* | "") continue ;; esac
        key=${line%%=*}
        case " ${settings[*]} " in *" $key "*) ;; *) continue ;; esac
        [ -n "${!key:-}" ] || export "$key=${line#*=}"
    done <"$env_file"
fi
stack=${STACK_NAME:-docker-sample}
file=${STACK_FILE:-$root/compose/stack.yml}
wait_s=${DEPLOY_WAIT:-300}
export SECRETS_DIR=${SECRETS_DIR:-$root/secrets}
export LIVE_ENV_FILE=${LIVE_ENV_FILE:-$root/env/live.env}
case "$SECRETS_DIR" in /*) ;; *) SECRETS_DIR=$PWD/$SECRETS_DIR ;; esac  # resolved against compose/ otherwise
case "$LIVE_ENV_FILE" in /*) ;; *) LIVE_ENV_FILE=$PWD/$LIVE_ENV_FILE ;; esac

record() { # writes SWARM_ENV_FILE: every setting set now
    local tmp key
    tmp=$(mktemp "$env_file.XXXXXX")
    {
        echo "# Written by scripts/swarm.sh: what the stack $stack runs with; read back by its next commands."
        for key in "${settings[@]}"; do
            [ -n "${!key:-}" ] && echo "$key=${!key}"
        done
    } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$env_file"
}

services() { docker stack services --format '{{.Name}}' "$stack"; }

# `SERVICE TAG` for every running task of the stack (the tag of its image, digest removed).
running_tags() {
    docker stack ps --filter desired-state=running --format '{{.Name}} {{.Image}} {{.CurrentState}}' "$stack" |
        awk '$3 == "Running" { sub(/\.[^.]*$/, "", $1); sub(/@.*/, "", $2); n = split($2, p, ":"); print $1, p[n] }'
}

# Until every service runs its replicas, those of the app's and httpd's images on VERSION, or DEPLOY_WAIT runs out.
wait_converged() { # VERSION SINCE (epoch seconds)
    local version=$1 since=$2 deadline bad
    deadline=$(($(date +%s) + wait_s))
    while :; do
        # Replicas counted from the tasks themselves: `docker service ls` sums up from a status that lags behind by
        # a few seconds (a replica just stopped can still count there).
        bad=$({
            docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}} {{.Replicas}}' |
                awk '{ split($2, r, "/"); print "want", $1, r[2] }'
            running_tags | awk '{ print "have", $1, $2 }'
        } | awk -v v="$version" -v s="$stack" '
            $1 == "want" { want[$2] = $3; next }
            { have[$2]++; if ($2 != s "_db" && $2 != s "_redis" && $2 != s "_backup" && $3 != v) off[$2] = off[$2] " " $3 }
            END { for (k in want) { if (have[k] + 0 != want[k] + 0) printf " %s(%d/%s)", k, have[k], want[k]
                                    if (off[k] != "") printf " %s(on%s)", k, off[k] } }')
        # A rollback Swarm started itself (a new replica failed) since this deploy began ends the wait.
        # shellcheck disable=SC2046  # one argument per service
        docker service inspect --format \
            '{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}} {{if .UpdateStatus.StartedAt}}{{.UpdateStatus.StartedAt.Unix}}{{end}}{{end}}' \
            $(services) | while read -r svc st started; do
            case "$st" in
                rollback_started | rollback_completed | rollback_paused | paused)
                    [ "${started:-0}" -ge "$since" ] || continue
                    echo "$svc: its update was rolled back or paused: $(docker service inspect --format \
                        '{{.UpdateStatus.Message}}' "$svc")"
                    exit 1 ;;
            esac
        done >&2 || die "the deploy of $version stopped"
        [ -z "$bad" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || die "not every service runs $version after ${wait_s}s:$bad"
        sleep 1
    done
}

deploy() { # VERSION
    local version=$1 current t
    case "$version" in
        latest) die "refused: deploy a version, not latest (a rollback needs to know what ran)" ;;
        "" | *[!A-Za-z0-9._-]*) die "refused: '$version' is not an image tag" ;;
    esac
    current=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${stack}_app" 2>/dev/null \
        | sed -e 's/@.*//' -e 's/.*://') || current=""
    if [ -n "$current" ] && [ "$current" != "$version" ]; then export PREVIOUS_VERSION=$current; fi
    export APP_VERSION=$version STACK_NAME=$stack
    t=$(date +%s)
    out=$(docker stack deploy --with-registry-auth -c "$file" "$stack" 2>&1) || die "docker stack deploy failed: $out"
    record
    wait_converged "$version" "$t"
    say "every service of $stack runs $version ($(($(date +%s) - t)) s)${PREVIOUS_VERSION:+; rollback goes to $PREVIOUS_VERSION}"
}

# The secret a service mounts as /run/secrets/NAME (postgres_password by default).
secret_of() { # SERVICE [NAME]
    docker service inspect --format \
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{if eq .File.Name \"${2:-postgres_password}\"}}{{.SecretName}}{{end}}{{end}}" "$1"
}

# The services that log in to PostgreSQL with the secret NAME (every one but db).
db_clients() { # NAME
    local svc
    for svc in $(services); do
        if [ "$svc" != "${stack}_db" ] && [ "$(secret_of "$svc")" = "$1" ]; then echo "$svc"; fi
    done
}

# A rotation that did not reach PostgreSQL: every client updated to the new secret goes back to its spec before
# (`docker service rollback`: the old secret only), and the new secret goes. Nothing has changed then.
undo_rotation() { # REASON (uses rotate's clients, new_name and pw_file)
    local svc
    for svc in $clients; do
        [ "$(secret_of "$svc")" = "$new_name" ] || continue
        docker service rollback --quiet --detach=false "$svc" >/dev/null || say "$svc: rollback failed"
    done
    docker secret rm "$new_name" >/dev/null 2>&1 || say "the new secret $new_name is still there (docker secret rm it)"
    rm -f "$pw_file"
    die "$1: every service is back on the old secret; run the same command again"
}

rotate() {
    local new_name old_name stale image net oneoff state t pw_file svc sql pids=() rc=0 clients
    docker service inspect "${stack}_app" >/dev/null 2>&1 || die "no service ${stack}_app: deploy the stack first"
    command -v openssl >/dev/null || die "openssl is needed to make the new password"
    [ -d "$SECRETS_DIR" ] || die "SECRETS_DIR=$SECRETS_DIR is not a directory"
    old_name=$(secret_of "${stack}_app")
    [ -n "$old_name" ] || die "${stack}_app mounts no postgres_password secret"
    clients=$(db_clients "$old_name")
    new_name="${stack}_postgres_password_$(date -u +%Y%m%d%H%M%S)"
    t=$(date +%s)
    pw_file="$SECRETS_DIR/postgres_password.next"
    (umask 022; openssl rand -hex 32 >"$pw_file")
    docker secret create "$new_name" "$pw_file" >/dev/null || die "docker secret create $new_name failed"
    # 1. Every client mounts both passwords, the new one first (app, tasks and backup at once, each one replica at a
    # time, start-first); the previous password of an earlier rotation goes.
    for svc in $clients; do
        stale=$(secret_of "$svc" postgres_password_previous)
        docker service update --quiet --detach=false ${stale:+--secret-rm "$stale"} --secret-rm "$old_name" \
            --secret-add "source=$new_name,target=postgres_password" \
            --secret-add "source=$old_name,target=postgres_password_previous" \
            --env-add POSTGRES_PASSWORD_PREVIOUS_FILE=/run/secrets/postgres_password_previous "$svc" >/dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [ "$rc" = 0 ] || undo_rotation "not every service took the new secret"
    # 2. The role's password, set by a one-off task next to the database: psql reads the new one from its secret
    # file (never a command line); it logs in with the old one, or the new one when a run stopped halfway set it.
    image=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${stack}_db")
    net="${stack}_backend"
    oneoff="${stack}_rotate-$(date -u +%H%M%S)"
    # psql's \set with backquotes reads the new password from its file: it is on no command line, in no environment.
    sql=$(cat <<'EOF'
\set pw `cat /run/secrets/pg_new`
ALTER ROLE CURRENT_USER PASSWORD :'pw';
EOF
)
    # shellcheck disable=SC2016  # expanded by the one-off's shell
    docker service create --quiet --detach --name "$oneoff" --restart-condition none --network "$net" \
        --constraint node.labels.docker-sample.data==true --env-file "$LIVE_ENV_FILE" --env "ROTATE_SQL=$sql" \
        --user postgres --secret "source=$old_name,target=pg_old" --secret "source=$new_name,target=pg_new" \
        --entrypoint /bin/sh "$image" -c '
            for f in pg_old pg_new; do
                if printf "%s\n" "$ROTATE_SQL" | PGPASSWORD=$(cat /run/secrets/$f) psql -X -q -v ON_ERROR_STOP=1 \
                    -h "$POSTGRES_HOST" -p "${POSTGRES_PORT:-5432}" -U "$POSTGRES_USER" -d "$POSTGRES_DB"; then
                    echo "password set (logged in with $f)"; exit 0
                fi
            done
            exit 1' >/dev/null || die "could not start the one-off service that sets the password"
    state=""
    for _ in $(seq 1 120); do
        state=$(docker service ps --format '{{.CurrentState}}' "$oneoff" | head -n 1)
        case "$state" in Complete* | Failed* | Rejected*) break ;; esac
        sleep 1
    done
    case "$state" in
        Complete*) ;;
        Failed* | Rejected*)
            say "setting the password failed ($state): $(docker service logs --raw "$oneoff" 2>&1 | tail -n 5)"
            docker service rm "$oneoff" >/dev/null 2>&1
            undo_rotation "PostgreSQL kept the old password" ;;
        *)
            docker service rm "$oneoff" >/dev/null 2>&1
            die "the one-off that sets the password did not finish in 120 s ($state): PostgreSQL has the old or the new password, and the services hold both (they work with either); find out with docker service logs, then run the command again" ;;
    esac
    docker service rm "$oneoff" >/dev/null
    mv "$pw_file" "$SECRETS_DIR/postgres_password"
    export POSTGRES_PASSWORD_SECRET=$new_name
    record
    say "PostgreSQL password replaced: secret $new_name ($(($(date +%s) - t)) s); db keeps $old_name until the next deploy"
}

status() {
    docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}} {{.Replicas}}'
    running_tags | sort | uniq -c | awk '{ printf "%s: %s replica(s) on %s\n", $2, $1, $3 }'
}

case "$cmd" in
    deploy) deploy "${1:-}" ;;
    rollback)
        [ -n "${PREVIOUS_VERSION:-}" ] || die "no earlier version recorded in $env_file: deploy one with scripts/swarm.sh deploy"
        deploy "$PREVIOUS_VERSION"
        ;;
    rotate-db-password) rotate ;;
    status) status ;;
esac
