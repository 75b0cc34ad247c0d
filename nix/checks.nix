# The flake's whole `checks` set: the cargo checks (nix/rust.nix), the package builds, the nginx
# configs, the compose files and the Nix files here, the image contract on Linux
# (nix/image-contract.nix) and the VM test on x86_64-linux (nix/vm-test.nix).
{
  lib,
  pkgs,
  callPackage,
  layout,
  version,
  composeSrc,
  nixfmt,
  nginx,
  rust,
  # The flake's packages, under their public names (nix/packages.nix).
  packages,
}:
let
  inherit (pkgs.stdenv) hostPlatform;
  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };
in
rust.checks
// {
  # The static files build and refuse the app; on Linux, the images build.
  inherit (packages) static;
  # `nginx -t` on the file the image ships and on the edge's config (nginx/edge.conf, run in the
  # same image), as written: the lines httpd-start renders from the environment (# SUBST:<name>)
  # hold the defaults. Their upstreams (`app:8000 resolve`, `httpd:8080` through a variable) are
  # looked up at run time only, so the sandbox's missing DNS does not matter. Changed on a copy:
  # every /tmp/ path (pid file, temp paths) moved into the build directory, since `nginx -t`
  # creates them and /tmp is shared where Nix runs unsandboxed; the edge's certificate and key
  # (SUBST:tls-certificate / tls-key) are a throwaway self-signed pair, which `nginx -t` loads.
  # stdout goes to a file: the config logs to /dev/stdout, which nginx opens. The rendered
  # variants (ACME waiting, rate limit off, HSTS, any host) are `nginx -t`ed by the cargo test
  # tests/httpd_start (checks.app-nextest).
  nginx-config =
    pkgs.runCommand "nginx-config-test"
      {
        nativeBuildInputs = [
          nginx
          (lib.getBin pkgs.openssl)
        ];
      }
      ''
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
          -subj /CN=localhost -keyout "$PWD/key.pem" -out "$PWD/cert.pem" 2> openssl.log
        for conf in ${../. + "/${layout.httpd.config_source}"} ${../nginx/edge.conf}; do
          sed -E \
            -e "s|/tmp/|$TMPDIR/|g" \
            -e "s|^( *).*# SUBST:tls-certificate$|\1ssl_certificate $PWD/cert.pem;|" \
            -e "s|^( *).*# SUBST:tls-key$|\1ssl_certificate_key $PWD/key.pem;|" \
            "$conf" > test.conf
          echo "nginx -t: $conf"
          nginx -t -e stderr -c "$PWD/test.conf" > nginx-stdout.log
        done
        touch "$out"
      '';

  # `docker compose config -q` on the three stacks, as users run them: APP_VERSION is the
  # image tag. The git-ignored secrets files need not exist for `config`.
  compose-config =
    pkgs.runCommand "compose-config" { nativeBuildInputs = [ pkgs.docker-compose ]; }
      ''
        export HOME=$TMPDIR APP_VERSION=${version} DEV_VERSION=${version}
        cd ${composeSrc} || exit 1
        for file in compose/dev.yml compose/live.yml compose/stack.yml; do
          docker-compose -f "$file" config -q
        done
        touch "$out"
      '';

  # The same formatter and dead-code check as CI (.ci/nix-lint.sh) and `nix fmt`.
  nix-format =
    pkgs.runCommand "nix-format"
      {
        nativeBuildInputs = [
          nixfmt
          pkgs.deadnix
        ];
      }
      ''
        cd ${nixFiles} || exit 1
        find . -name '*.nix' -exec nixfmt --check {} +
        deadnix --fail .
        touch "$out"
      '';
}
// lib.optionalAttrs hostPlatform.isLinux (
  { inherit (packages) applayer staticlayer; } // callPackage ./image-contract.nix { }
)
// lib.optionalAttrs (hostPlatform.system == "x86_64-linux") {
  vm-test = callPackage ./vm-test.nix { standins = callPackage ./standins.nix { }; };
}
