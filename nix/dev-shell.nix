# `nix develop`: the cargo checks' inputs (toolchain, PostgreSQL and Redis for the tests) plus the
# tools of the compose and image workflow.
{
  pkgs,
  craneLib,
  rust,
  nginx,
  nixfmt,
}:
craneLib.devShell {
  inherit (rust) checks;
  packages = [
    pkgs.sqlx-cli
    pkgs.postgresql_17
    pkgs.redis
    nginx
    pkgs.docker-compose
    pkgs.skopeo
    pkgs.cargo-nextest
    pkgs.cargo-audit
    pkgs.cargo-deny
    # Verifying a release's signatures and attestations (README, "Releases").
    pkgs.cosign
    nixfmt
    pkgs.deadnix
    # scripts/watch.sh: rebuilds and restarts app and tasks on each change, on a socket it holds (--socket).
    pkgs.watchexec
  ];
}
