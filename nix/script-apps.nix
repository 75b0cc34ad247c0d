# `nix run .#deploy -- VERSION` and `nix run .#backup -- COMMAND`: the scripts in scripts/, run from the
# checkout (they use its compose files, env/ and secrets/), with the tools they need on PATH.
# Docker itself (with Compose v2) is the host's: the daemon and its CLI plugins are not something a flake app
# should replace. Watch mode, which also needs the Rust toolchain and runs on every system: nix/watch-app.nix.
{
  lib,
  pkgs,
}:
let
  scriptApp =
    name: runtimeInputs: description:
    let
      drv = pkgs.writeShellApplication {
        name = "docker-sample-${name}";
        inherit runtimeInputs;
        text = ''
          if [ ! -f scripts/${name}.sh ]; then
            echo "docker-sample-${name}: run it from the repository root (scripts/${name}.sh not found)" >&2
            exit 1
          fi
          exec bash scripts/${name}.sh "$@"
        '';
      };
    in
    {
      type = "app";
      program = lib.getExe drv;
      meta = { inherit description; };
    };
  common = [
    pkgs.coreutils
    pkgs.gnugrep
    pkgs.gnused
  ];
in
{
  deploy = scriptApp "deploy" (
    common ++ [ pkgs.cosign ]
  ) "Deploy VERSION to the running live stack without a failed request (scripts/deploy.sh)";
  backup =
    scriptApp "backup" common
      "Back up, list, verify or restore the live database (scripts/backup.sh)";
}
