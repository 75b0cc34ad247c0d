# Stand-ins for the official postgres and redis images, for the VM test only (a VM has no
# registry to pull from). They follow the part of the official images' contract that
# compose/live.yml relies on, like the stand-ins tests/e2e/standins.sh builds with Docker:
#   postgres: user `postgres` (uid 999); POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB,
#             each also as *_FILE; initdb on first start into PGDATA
#             (/var/lib/postgresql/data); password (scram-sha-256) auth from any host; the
#             socket in /var/run/postgresql; `pg_isready`; STOPSIGNAL SIGINT.
#   redis:    user `redis` (uid 999); arguments from the command line (a leading option
#             means redis-server); protected mode off like the official build; data in
#             /data; `redis-cli`.
# Both run as their user from the start (no root step) and have a busybox shell for the
# `sh -c` command and CMD-SHELL healthchecks of compose/live.yml. Never used outside the test.
{
  lib,
  pkgs,
  nix2container,
}:
let
  uid = 999;

  # /bin from the given packages, a user, and directories owned by that user. /var/run links
  # to /run as on Debian, so a tmpfs mounted at /var/run/postgresql (compose/live.yml, with a
  # read-only root) is the socket directory.
  mkRoot =
    name: packages: dirs:
    pkgs.runCommand "${name}-standin-root" { } ''
      mkdir -p "$out/etc" "$out/tmp" "$out/var" ${lib.concatMapStringsSep " " (d: "\"$out${d}\"") dirs}
      ln -s /run "$out/var/run"
      ln -s ${
        pkgs.buildEnv {
          name = "${name}-standin-bin";
          paths = packages;
          pathsToLink = [ "/bin" ];
        }
      }/bin "$out/bin"
      echo 'root:x:0:0:root:/root:/bin/sh' > "$out/etc/passwd"
      echo '${name}:x:${toString uid}:${toString uid}:${name}:${lib.head dirs}:/bin/sh' >> "$out/etc/passwd"
      printf 'root:x:0:\n${name}:x:${toString uid}:\n' > "$out/etc/group"
    '';

  mkPerms =
    root: dirs:
    [
      {
        path = root;
        regex = "^${lib.escapeRegex "${root}/tmp"}$";
        mode = "1777";
      }
    ]
    ++ map (d: {
      path = root;
      regex = "^${lib.escapeRegex "${root}${d}"}$";
      mode = "0700";
      inherit uid;
      gid = uid;
    }) dirs;

  mkStandin =
    {
      name,
      tag,
      packages,
      dirs,
      entrypoint,
      config,
    }:
    let
      root = mkRoot name packages dirs;
    in
    nix2container.buildImage {
      name = "docker-sample-vm/${name}";
      inherit tag;
      copyToRoot = [ root ];
      perms = mkPerms root dirs;
      config = {
        Entrypoint = [ "${entrypoint}" ];
        User = "${toString uid}:${toString uid}";
        Env = [ "PATH=/bin" ];
      }
      // config;
    };

  postgresql = pkgs.postgresql_17;
in
{
  postgres = mkStandin {
    name = "postgres";
    tag = postgresql.version;
    packages = [
      pkgs.busybox
      postgresql
    ];
    # PGDATA first (the user's home), then the socket directory.
    dirs = [
      "/var/lib/postgresql/data"
      "/run/postgresql"
    ];
    entrypoint = pkgs.writeScript "docker-entrypoint.sh" ''
      #!/bin/sh
      set -eu
      case "''${1:-}" in -*) set -- postgres "$@" ;; esac
      [ "''${1:-}" = postgres ] || exec "$@"
      shift
      : "''${PGDATA:=/var/lib/postgresql/data}"
      file_env() {
        eval "file=\''${$1_FILE:-}"
        if [ -n "$file" ]; then eval "$1=\$(cat \"\$file\")"; fi
      }
      if [ ! -s "$PGDATA/PG_VERSION" ]; then
        file_env POSTGRES_PASSWORD
        file_env POSTGRES_USER
        file_env POSTGRES_DB
        : "''${POSTGRES_USER:=postgres}"
        : "''${POSTGRES_DB:=$POSTGRES_USER}"
        printf '%s\n' "''${POSTGRES_PASSWORD:?POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required}" > /tmp/pwfile
        initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile=/tmp/pwfile \
          --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale
        rm -f /tmp/pwfile
        echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
        echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
        if [ "$POSTGRES_DB" != postgres ]; then
          echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres > /dev/null
        fi
      fi
      exec postgres -D "$PGDATA" -c unix_socket_directories=/var/run/postgresql "$@"
    '';
    config = {
      Env = [
        "PATH=/bin"
        "PGDATA=/var/lib/postgresql/data"
      ];
      ExposedPorts."5432/tcp" = { };
      StopSignal = "SIGINT";
    };
  };

  redis = mkStandin {
    name = "redis";
    tag = pkgs.redis.version;
    packages = [
      pkgs.busybox
      pkgs.redis
    ];
    dirs = [ "/data" ];
    entrypoint = pkgs.writeScript "docker-entrypoint.sh" ''
      #!/bin/sh
      set -eu
      case "''${1:-}" in -*|*.conf) set -- redis-server "$@" ;; esac
      if [ "''${1:-}" = redis-server ]; then
        shift
        # A config file (or `-`, stdin) must stay the first argument.
        case "''${1:-}" in
          "" | --*) set -- redis-server --protected-mode no "$@" ;;
          *) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;;
        esac
      fi
      exec "$@"
    '';
    config = {
      Cmd = [ "redis-server" ];
      WorkingDir = "/data";
      ExposedPorts."6379/tcp" = { };
    };
  };
}
