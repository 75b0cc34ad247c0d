# The checks that are not cargo's: the nginx config, the compose files and the Nix files.
{
  lib,
  pkgs,
  layout,
  version,
  composeSrc,
  nixfmt,
  nginx,
}:
let
  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };
in
{
  # `nginx -t` on the file the image ships. The config's upstream server is `app:8000 resolve`,
  # looked up at run time only, so the sandbox's missing DNS does not matter. Only the pid file and
  # temp paths (lines marked SUBST:pid / SUBST:temp) are moved from /tmp into the build
  # directory, since `nginx -t` creates them and /tmp is shared where Nix runs unsandboxed.
  # stdout goes to a file: the config logs to /dev/stdout, which nginx opens.
  nginx-config = pkgs.runCommand "nginx-config-test" { nativeBuildInputs = [ nginx ]; } ''
    sed -E \
      -e "s|^( *).*# SUBST:pid$|\1pid $TMPDIR/nginx.pid;|" \
      -e "s|^( *)([a-z_]+_temp_path) .*# SUBST:temp$|\1\2 $TMPDIR/\2;|" \
      ${../. + "/${layout.static.config_source}"} > nginx.conf
    nginx -t -e stderr -c "$PWD/nginx.conf" > nginx-stdout.log
    touch $out
  '';

  # `docker compose config -q` on the three stacks, as users run them: APP_VERSION is the
  # image tag. The git-ignored secrets files need not exist for `config`.
  compose-config =
    pkgs.runCommand "compose-config" { nativeBuildInputs = [ pkgs.docker-compose ]; }
      ''
        export HOME=$TMPDIR APP_VERSION=${version}
        cd ${composeSrc}
        for file in compose/dev.yml compose/live.yml compose/stack.yml; do
          docker-compose -f "$file" config -q
        done
        touch $out
      '';

  # The same formatter and dead-code check as CI (.ci/nix-checks.sh) and `nix fmt`.
  nix-format =
    pkgs.runCommand "nix-format"
      {
        nativeBuildInputs = [
          nixfmt
          pkgs.deadnix
        ];
      }
      ''
        cd ${nixFiles}
        find . -name '*.nix' -exec nixfmt --check {} +
        deadnix --fail .
        touch $out
      '';
}
