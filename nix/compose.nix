# What the compose check and the VM test share: the compose project and its secrets.
{ lib, pkgs }:
{
  # The compose files, the env files they read and the files they give services as configs (the
  # backup service's script, the edge's nginx config); nothing else of the repository.
  composeSrc = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../compose
      (lib.fileset.maybeMissing ../env)
      (lib.fileset.maybeMissing ../backup)
      ../nginx/edge.conf
    ];
  };

  # Writes every secrets file a compose file names and that does not exist yet (they are
  # git-ignored) with a random value: 48 hex characters, URL-safe and long enough for
  # SECRET_KEY. The paths come from `docker compose config`, so variables such as
  # SECRETS_DIR and relative paths resolve exactly as compose resolves them (it does not
  # need the files to exist for that). Readable by all: compose without swarm bind-mounts
  # the files as they are, and the containers run as non-root users.
  composeSecrets = pkgs.writeShellApplication {
    name = "compose-secrets";
    runtimeInputs = [
      pkgs.docker-compose
      pkgs.jq
      pkgs.coreutils
      pkgs.openssl
    ];
    text = ''
      for compose in "$@"; do
        docker-compose -f "$compose" config --format json \
          | jq -r '(.secrets // {})[] | .file // empty' \
          | while IFS= read -r path; do
            if [ ! -e "$path" ]; then
              mkdir -p "$(dirname "$path")"
              case "$path" in
                *.key) continue ;; # written with its certificate (*.crt)
                *.crt)
                  # A self-signed pair, as the README makes it.
                  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
                    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
                    -keyout "''${path%.crt}.key" -out "$path" 2>/dev/null
                  chmod 644 "''${path%.crt}.key"
                  ;;
                *) (umask 022 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$path") ;;
              esac
              echo "compose-secrets: wrote $path"
            fi
          done
      done
    '';
  };
}
