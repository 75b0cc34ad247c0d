# shellcheck shell=bash
# Sourced by scripts/deploy.sh and scripts/backup.sh (which define `dc`, their `docker compose -f FILE`): the two
# Compose commands whose exit status they act on, with the status read from the engine. `docker compose exec` and
# `docker compose run` report 0 whatever the command's status against some engines (seen with Compose 2.40 and
# Debian's Docker 20.10), and a restore or a deploy that took a failure for a success would go on regardless.

# first_running SERVICE: the id of the service's first running container (empty when none). Never `dc ps | head -n
# 1`: head leaves after one line, the next write kills Compose with SIGPIPE, and the docker CLI then exits 255
# without a word, which `set -eo pipefail` takes for a failure (seen with a service of two replicas).
first_running() {
    local ids
    ids=$(dc ps --quiet "$1") || return
    printf '%s\n' "${ids%%$'\n'*}"
}

# service_exec SERVICE CMD...: CMD in the service's first running container; CMD's status.
service_exec() {
    local id
    id=$(first_running "$1")
    [ -n "$id" ] || { echo "$1 is not running" >&2; return 125; }
    shift
    docker exec "$id" "$@"
}

# one_off [RUN OPTIONS...] SERVICE [ARGS...]: `run --rm --no-deps` with the command's status; its output on stdout.
one_off() {
    local name rc
    name="oneoff-$$-${RANDOM}"
    dc run --detach --no-deps --name "$name" "$@" >/dev/null || return 125
    rc=$(docker wait "$name")
    docker logs "$name" 2>&1
    docker rm "$name" >/dev/null 2>&1
    return "$rc"
}
