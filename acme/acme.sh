#!/bin/sh
# Certificates from an ACME CA (Let's Encrypt by default) for the edge nginx: run by the `acme` service of
# compose/live.yml (compose profile `acme`) in the official goacme/lego image, whose entry point it replaces, as a
# non-root user. http-01 challenges: lego writes them into ACME_ROOT/webroot, which the edge serves on its HTTP port.
# POSIX sh; needs lego and cat, date, id, ls, mkdir, mv, rm, sleep, chmod, tr. Notes: acme/README.md.
#
#   acme.sh loop             obtain the certificate (none yet, or the domains changed), publish it; then every
#                            ACME_CHECK_INTERVAL renew it once it expires within ACME_RENEW_DAYS, and publish again
#   acme.sh obtain           a new certificate now (lego run), then publish it
#   acme.sh renew [--force]  renew now if due (--force: whatever its expiry), publish when renewed
#   acme.sh publish          copy lego's certificate (full chain) and key to ACME_ROOT/tls/cert.pem and key.pem
#   acme.sh check            healthcheck: a published certificate for the domains, not within ACME_RENEW_DAYS/2
#                            days of its expiry
#   acme.sh status           domains, expiry and whether the edge's copy is current
#   acme.sh domains          the domains the certificate is for
#
# Environment (env/live.env; defaults in brackets):
#   ACME_DOMAINS         comma- or space-separated DNS names [the DNS names of ALLOWED_HOSTS: not `*`, not
#                        `.example.com` wildcards, not IP addresses, not localhost, not names without a dot]
#   ACME_EMAIL           the ACME account's contact address (required: lego keys its account by it)
#   ACME_SERVER          the CA's directory URL [https://acme-v02.api.letsencrypt.org/directory]; Let's Encrypt's
#                        staging CA: https://acme-staging-v02.api.letsencrypt.org/directory
#   ACME_KEY_TYPE        the certificate's key: ec256, ec384, rsa2048, rsa4096 [ec256]
#   ACME_RENEW_DAYS      renew when the certificate expires within this many days [30]
#   ACME_CHECK_INTERVAL  how often `loop` looks: seconds, or a number with s, m, h or d [12h]
#   ACME_ROOT            the volume shared with the edge [/srv/acme]: lego/ (account, certificates: this user
#                        only), webroot/ (challenges), tls/cert.pem and tls/key.pem (what the edge serves)
#   LEGO_CA_CERTIFICATES lego's own: PEM file(s) of CAs to trust for ACME_SERVER's HTTPS (a test CA: pebble)
#
# Enabling the service accepts the CA's terms of service (lego --accept-tos): Let's Encrypt's are at
# https://letsencrypt.org/repository/.
set -u -f   # -f: no globbing (ALLOWED_HOSTS may hold `*`)

ACME_ROOT=${ACME_ROOT:-/srv/acme}
LEGO_PATH=$ACME_ROOT/lego
WEBROOT=$ACME_ROOT/webroot
TLS_DIR=$ACME_ROOT/tls
LOCK=${TMPDIR:-/tmp}/acme.lock
FORCE_DAYS=100000          # `renew --force`: lego renews a certificate that expires within this many days
if [ -x /lego ]; then LEGO=/lego; else LEGO=lego; fi   # the official image has /lego; a package puts it on PATH

info() { echo "acme: $*"; }
err() { echo "acme: ERROR: $*" >&2; }
die() { err "$*"; release; exit 1; }
usage_die() { err "$*"; exit 2; }

# ---- settings -------------------------------------------------------------------------------------------------------

lower() { echo "$1" | tr '[:upper:]' '[:lower:]'; }

# A DNS name an ACME CA can validate over http-01: letters, digits, hyphens, dots; at least one dot; no wildcard.
dns_name() {
    case $1 in
        ""|*[!a-z0-9.-]*|.*|*.|*..*|-*|*-) return 1 ;;
        *.*) ;;
        *) return 1 ;;
    esac
    case $1 in
        localhost|*.localhost) return 1 ;;
        *[!0-9.]*) return 0 ;;   # not all digits and dots: a name, not an IPv4 address
        *) return 1 ;;
    esac
}

# The domains, one per line, first one first (lego names the certificate after it), duplicates dropped.
domains() {
    seen=" "
    if [ -n "${ACME_DOMAINS:-}" ]; then
        for d in $(lower "$ACME_DOMAINS" | tr ',' ' '); do
            case $d in \*.*) usage_die "ACME_DOMAINS: $d is a wildcard: http-01 cannot validate one (list the names)" ;; esac
            dns_name "$d" || usage_die "ACME_DOMAINS: '$d' is not a DNS name"
            case $seen in *" $d "*) ;; *) seen="$seen$d "; echo "$d" ;; esac
        done
    else
        for d in $(lower "${ALLOWED_HOSTS:-}" | tr ',' ' '); do
            dns_name "$d" || continue    # `*`, `.example.com`, IP addresses, `[::1]`, localhost
            case $seen in *" $d "*) ;; *) seen="$seen$d "; echo "$d" ;; esac
        done
    fi
}

interval_seconds() {
    v=${ACME_CHECK_INTERVAL:-12h}
    case $v in
        *[!0-9smhd]*|""|[smhd]*) usage_die "ACME_CHECK_INTERVAL must be seconds or a number with s, m, h or d (e.g. 12h), not '$v'" ;;
        *[0-9]) n=$v; m=1 ;;
        *s) n=${v%s}; m=1 ;;
        *m) n=${v%m}; m=60 ;;
        *h) n=${v%h}; m=3600 ;;
        *d) n=${v%d}; m=86400 ;;
    esac
    case $n in ""|*[!0-9]*) usage_die "ACME_CHECK_INTERVAL must be seconds or a number with s, m, h or d (e.g. 12h), not '$v'" ;; esac
    [ "$n" -gt 0 ] || usage_die "ACME_CHECK_INTERVAL must be > 0"
    echo $((n * m))
}

renew_days() {
    v=${ACME_RENEW_DAYS:-30}
    case $v in ""|*[!0-9]*) usage_die "ACME_RENEW_DAYS must be a number of days, not '$v'" ;; esac
    [ "$v" -gt 0 ] || usage_die "ACME_RENEW_DAYS must be > 0"
    echo "$v"
}

# Every setting checked at once, each problem on a line of its own; sets DOMAINS (space-separated) and NAME.
settings() {
    bad=0
    DOMAINS=$(domains) || exit 2
    DOMAINS=$(echo "$DOMAINS" | tr '\n' ' ')
    DOMAINS=${DOMAINS% }
    NAME=${DOMAINS%% *}
    if [ -z "$DOMAINS" ]; then
        err "no domain: set ACME_DOMAINS, or put the site's DNS name in ALLOWED_HOSTS (ALLOWED_HOSTS=${ALLOWED_HOSTS:-})"
        bad=1
    fi
    case ${ACME_EMAIL:-} in
        ?*@?*.?*) ;;
        *) err "ACME_EMAIL must be the ACME account's contact address (lego requires one), not '${ACME_EMAIL:-}'"; bad=1 ;;
    esac
    case ${ACME_SERVER:-https://} in
        https://*) ;;
        *) err "ACME_SERVER must be an https:// directory URL, not '$ACME_SERVER'"; bad=1 ;;
    esac
    case ${ACME_KEY_TYPE:-ec256} in
        ec256|ec384|rsa2048|rsa4096|rsa8192) ;;
        *) err "ACME_KEY_TYPE must be ec256, ec384, rsa2048, rsa4096 or rsa8192, not '$ACME_KEY_TYPE'"; bad=1 ;;
    esac
    ( interval_seconds >/dev/null ) || bad=1
    ( renew_days >/dev/null ) || bad=1
    [ "$bad" = 0 ] || exit 2
}

# ---- the volume, the lock ---------------------------------------------------------------------------------------------

prepare() {
    if ! mkdir -p "$LEGO_PATH" "$WEBROOT" "$TLS_DIR" 2>/dev/null; then
        die "cannot write $ACME_ROOT as uid $(id -u): $(ls -ldn "$ACME_ROOT" 2>&1) (a fresh volume gets the mode of the image's /var/tmp, mounted from the same volume: acme/README.md \"The volume\")"
    fi
    # lego/ holds the account key and the certificates' keys: this user only. webroot/ is read by the edge (any
    # uid) and tls/ by the edge's group.
    if ! chmod 700 "$LEGO_PATH" || ! chmod 755 "$WEBROOT" || ! chmod 750 "$TLS_DIR"; then
        die "cannot set the modes under $ACME_ROOT"
    fi
}

locked=""
# One lego at a time (the loop, `docker exec ... acme.sh renew --force`): a directory in /tmp (a tmpfs, so a
# restart clears it), with its holder's pid; a holder that is gone (a killed exec) leaves a lock taken over.
lock() {
    waited=0
    while ! mkdir "$LOCK" 2>/dev/null; do
        holder=$(cat "$LOCK/pid" 2>/dev/null || true)
        if [ -n "$holder" ] && ! kill -0 "$holder" 2>/dev/null; then
            rm -rf "$LOCK"; continue
        fi
        [ "$waited" -lt 300 ] || { err "another lego run holds $LOCK (pid ${holder:-?}) for 300 s"; return 1; }
        sleep 1; waited=$((waited + 1))
    done
    echo $$ > "$LOCK/pid"
    locked=1
}
release() {
    [ -z "$locked" ] || rm -rf "$LOCK"   # not rmdir: minimal images may lack it
    locked=""
}

# ---- lego -------------------------------------------------------------------------------------------------------------

lego_pid=""
# lego in the background, waited for, so that a SIGTERM reaches the script (and is passed on) while lego runs.
run_lego() { # SUBCOMMAND [ITS FLAGS]: words without spaces; lego's global flags go before them
    sub=$*
    set -- --server "${ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}" --email "$ACME_EMAIL" \
        --accept-tos --path "$LEGO_PATH" --key-type "${ACME_KEY_TYPE:-ec256}" \
        --http --http.webroot "$WEBROOT"
    for d in $DOMAINS; do set -- "$@" --domains "$d"; done
    # shellcheck disable=SC2086  # split on purpose
    set -- "$@" $sub
    (umask 022; exec "$LEGO" "$@") &
    lego_pid=$!
    wait "$lego_pid"
    rc=$?
    lego_pid=""
    return "$rc"
}

crt_file() { echo "$LEGO_PATH/certificates/$NAME.crt"; }
key_file() { echo "$LEGO_PATH/certificates/$NAME.key"; }

dec() { # strip leading zeros (shell arithmetic reads 08 as octal)
    n=$1
    while [ "${#n}" -gt 1 ] && [ "${n#0}" != "$n" ]; do n=${n#0}; done
    echo "$n"
}

# Seconds since the epoch of "YYYY-MM-DD HH:MM:SS" (UTC), by arithmetic: no `date -d` dialect needed.
epoch_of() {
    s=$1
    y=$(dec "${s%%-*}"); s=${s#*-}; m=$(dec "${s%%-*}"); s=${s#*-}; d=$(dec "${s%% *}"); s=${s#* }
    hh=$(dec "${s%%:*}"); s=${s#*:}; mm=$(dec "${s%%:*}"); s=${s#*:}; ss=$(dec "${s%% *}")
    [ "$m" -le 2 ] && y=$((y - 1))
    era=$((y / 400)); yoe=$((y - era * 400))
    if [ "$m" -gt 2 ]; then mp=$((m - 3)); else mp=$((m + 9)); fi
    doy=$(((153 * mp + 2) / 5 + d - 1))
    doe=$((yoe * 365 + yoe / 4 - yoe / 100 + doy))
    echo $(((era * 146097 + doe - 719468) * 86400 + hh * 3600 + mm * 60 + ss))
}

# lego's certificate for NAME, from `lego list`: sets CERT_DOMAINS (space-separated), CERT_EXPIRY (epoch)
# and CERT_EXPIRY_TEXT; returns 1 when lego has none.
cert_info() {
    CERT_DOMAINS="" CERT_EXPIRY="" CERT_EXPIRY_TEXT=""
    [ -s "$(crt_file)" ] || return 1
    out=$("$LEGO" --path "$LEGO_PATH" list 2>&1) || { err "lego list failed: $out"; return 1; }
    doms="" exp=""
    # "  Certificate Name: a.example" / "    Domains: a.example, b.example" / "    Expiry Date: 2026-01-31
    # 12:00:00 +0000 UTC" / "    Certificate Path: <path>": the block whose path is ours.
    while IFS= read -r line; do
        line=${line#"${line%%[! ]*}"}
        case $line in
            "Certificate Name:"*) doms="" exp="" ;;
            "Domains:"*) doms=${line#Domains: } ;;
            "Expiry Date:"*) exp=${line#Expiry Date: } ;;
            "Certificate Path:"*)
                if [ "${line#Certificate Path: }" = "$(crt_file)" ]; then
                    CERT_DOMAINS=$(echo "$doms" | tr -d ',')
                    CERT_EXPIRY_TEXT=${exp% +0000 UTC}
                    CERT_EXPIRY=$(epoch_of "$CERT_EXPIRY_TEXT")
                fi ;;
        esac
    done <<EOF
$out
EOF
    [ -n "$CERT_EXPIRY" ] || { err "lego list does not show $(crt_file)"; return 1; }
}

# Whether two space-separated word lists hold the same words (any order, no duplicates within a list).
same_set() {
    # shellcheck disable=SC2086  # split on purpose
    [ "$(count_words $1)" = "$(count_words $2)" ] || return 1
    for w in $1; do
        case " $2 " in *" $w "*) ;; *) return 1 ;; esac
    done
}
count_words() { echo $#; }

same_file() { [ -s "$1" ] && [ -s "$2" ] && [ "$(cat "$1")" = "$(cat "$2")" ]; }

days_left() { echo $(((CERT_EXPIRY - $(date -u +%s)) / 86400)); }

# ---- the steps --------------------------------------------------------------------------------------------------------

# lego's certificate and key to TLS_DIR, each by write-to-temp + rename in the same directory (a reader sees the
# old file or the new one, never a partial one). The key first, as the edge's contract says: once the new
# certificate is there, so is its key; httpd-start tests the pair (`nginx -t`) before it reloads.
# The key is 0640, owner this user, group the service's group (gid 1000, the edge's): the edge can read it, no
# other uid can; the volume is mounted only here and, read-only, in the edge.
publish() {
    crt=$(crt_file) key=$(key_file)
    if [ ! -s "$crt" ] || [ ! -s "$key" ]; then err "lego has no certificate for $NAME yet ($crt)"; return 1; fi
    if same_file "$crt" "$TLS_DIR/cert.pem" && same_file "$key" "$TLS_DIR/key.pem"; then
        return 0
    fi
    rm -f "$TLS_DIR/.key.pem.new" "$TLS_DIR/.cert.pem.new"
    if ! (umask 027; cat "$key" > "$TLS_DIR/.key.pem.new") || ! chmod 640 "$TLS_DIR/.key.pem.new" \
        || ! mv -f "$TLS_DIR/.key.pem.new" "$TLS_DIR/key.pem"; then
        err "cannot write $TLS_DIR/key.pem"; return 1
    fi
    if ! (umask 022; cat "$crt" > "$TLS_DIR/.cert.pem.new") || ! chmod 644 "$TLS_DIR/.cert.pem.new" \
        || ! mv -f "$TLS_DIR/.cert.pem.new" "$TLS_DIR/cert.pem"; then
        err "cannot write $TLS_DIR/cert.pem"; return 1
    fi
    if cert_info; then
        info "published the certificate for $CERT_DOMAINS (expires $CERT_EXPIRY_TEXT UTC, in $(days_left) days) to $TLS_DIR"
    else
        info "published the certificate for $DOMAINS to $TLS_DIR"
    fi
}

# A new certificate: none yet, or the domains changed (`lego renew` keeps the old certificate's domains).
obtain() {
    info "obtaining a certificate for $DOMAINS from ${ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}"
    run_lego run || { err "lego run failed (status $rc): its log is above"; return 1; }
    publish
}

# RANDOM=1: lego's random delay before a due renewal (up to 8 minutes; it spreads scheduled renewals over time,
# as the CA asks); off for a renewal asked for by hand.
renew() {
    days=$1 random=$2
    set -- renew --days "$days"
    [ "$random" = 1 ] || set -- "$@" --no-random-sleep
    run_lego "$@" || { err "lego renew failed (status $rc): its log is above"; return 1; }
    publish
}

# One round of the loop (and `obtain`, `renew` by hand): under the lock.
step() { # what: auto | obtain | renew | force
    lock || return 1
    if [ "$1" = obtain ] || ! cert_info; then
        obtain; r=$?
    elif ! same_set "$CERT_DOMAINS" "$DOMAINS"; then
        info "the certificate is for '$CERT_DOMAINS'; the domains are now '$DOMAINS': a new one"
        obtain; r=$?
    else
        case $1 in
            force) info "renewing now (asked, expires in $(days_left) days)"; renew "$FORCE_DAYS" 0; r=$? ;;
            renew) renew "$(renew_days)" 0; r=$? ;;
            *) renew "$(renew_days)" 1; r=$? ;;
        esac
    fi
    release
    return "$r"
}

sleeper=""
loop() {
    every=$(interval_seconds) || exit 2
    info "domains $DOMAINS; CA ${ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}; a look every ${every}s, renewal within $(renew_days) days of expiry; files in $ACME_ROOT"
    trap 'info "stopping"; [ -z "$lego_pid" ] || kill "$lego_pid" 2>/dev/null; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; release; exit 0' TERM INT
    retry=300
    while :; do
        if step auto; then
            wait_s=$every; retry=300
        else
            # Let's Encrypt allows 5 failed validations per account and name per hour: 5 min, then doubling, at
            # most the check interval. The healthcheck turns red once the certificate nears its expiry.
            wait_s=$retry
            [ "$wait_s" -le "$every" ] || wait_s=$every
            info "next attempt in ${wait_s}s"
            retry=$((retry * 2))
        fi
        sleep "$wait_s" & sleeper=$!
        wait "$sleeper"
        sleeper=""
    done
}

check() {
    if [ ! -s "$TLS_DIR/cert.pem" ] || [ ! -s "$TLS_DIR/key.pem" ]; then die "no certificate published in $TLS_DIR yet"; fi
    cert_info || die "lego has no certificate for $NAME"
    same_set "$CERT_DOMAINS" "$DOMAINS" || die "the certificate is for '$CERT_DOMAINS', the domains are '$DOMAINS'"
    same_file "$(crt_file)" "$TLS_DIR/cert.pem" || die "$TLS_DIR/cert.pem is not lego's current certificate (publish failed?)"
    left=$(days_left)
    limit=$(($(renew_days) / 2))
    [ "$left" -gt "$limit" ] || die "the certificate expires in $left days (renewal is due within $(renew_days); it is failing)"
    echo "acme: $CERT_DOMAINS: expires $CERT_EXPIRY_TEXT UTC, in $left days"
}

status() {
    echo "domains: $DOMAINS"
    if cert_info; then
        echo "certificate: $CERT_DOMAINS, expires $CERT_EXPIRY_TEXT UTC (in $(days_left) days)"
        if same_file "$(crt_file)" "$TLS_DIR/cert.pem"; then echo "published: yes ($TLS_DIR)"; else echo "published: NO"; fi
    else
        echo "certificate: none yet"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    loop) settings; prepare; loop ;;
    obtain) settings; prepare; step obtain ;;
    renew)
        settings; prepare
        case ${1:-} in --force) step force ;; "") step renew ;; *) usage_die "usage: renew [--force]" ;; esac ;;
    publish) settings; prepare; publish ;;
    check) settings; check ;;
    status) settings; status ;;
    domains) settings; echo "$DOMAINS" | tr ' ' '\n' ;;
    *)  # the comment at the top of this file
        while IFS= read -r line; do
            case $line in "#!"*) continue ;; "#"*) line=${line#\#}; echo "${line# }" ;; *) break ;; esac
        done < "$0"
        [ "$cmd" = -h ] || [ "$cmd" = --help ] || [ "$cmd" = help ] ;;
esac
