# `nix run .#watch`: scripts/watch.sh (watch mode) from the checkout, with what it runs on PATH: the toolchain of
# rust-toolchain.toml, a C compiler for the linker, watchexec (--socket) and sqlx-cli (`--prepare`). Every system:
# the app runs natively, for the machine's own target. Docker (with Compose v2) is the host's, as for the other
# script apps.
{
  lib,
  pkgs,
  craneLib,
}:
let
  drv = pkgs.writeShellApplication {
    name = "docker-sample-watch";
    runtimeInputs = [
      craneLib.cargo
      craneLib.rustc
      pkgs.stdenv.cc
      pkgs.watchexec
      pkgs.sqlx-cli
      pkgs.coreutils
      pkgs.findutils
      pkgs.gawk
      pkgs.gnugrep
      pkgs.gnused
      pkgs.procps
    ];
    text = ''
      if [ ! -f scripts/watch.sh ]; then
        echo "docker-sample-watch: run it from the repository root (scripts/watch.sh not found)" >&2
        exit 1
      fi
      exec bash scripts/watch.sh "$@"
    '';
  };
in
{
  watch = {
    type = "app";
    program = lib.getExe drv;
    meta.description = "Watch mode: app and tasks on this machine, rebuilt and restarted on each change (scripts/watch.sh)";
  };
}
