{
  description = "docker-sample (Rust): the app built with crane, its images with nix2container";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane/v0.23.4";
    # nix2container keeps its own nixpkgs: its patched skopeo is tested against that pin.
    nix2container.url = "github:nlewo/nix2container";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    advisory-db = {
      url = "github:rustsec/advisory-db";
      flake = false;
    };
    # CycloneDX SBOMs (nix/sbom.nix). Its flake only wraps `import ./. { inherit pkgs; }`, so it is
    # taken as source and imported with our pkgs: no second nixpkgs in the lock.
    bombon = {
      url = "github:nikstur/bombon";
      flake = false;
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
      nix2container,
      rust-overlay,
      advisory-db,
      bombon,
    }:
    let
      inherit (nixpkgs) lib;

      # The app, its checks and the dev shell build everywhere; the images, the apps that
      # load or push them and the VM test are Linux-only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];

      # The image layout contract, also read by tests/e2e/standins.sh.
      layout = builtins.fromJSON (builtins.readFile ./nix/image.json);

      perSystem =
        system:
        let
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ rust-overlay.overlays.default ];
          };
          isLinux = pkgs.stdenv.hostPlatform.isLinux;

          # The toolchain of rust-toolchain.toml, the same file rustup reads on the plain
          # cargo path.
          craneLib = (crane.mkLib pkgs).overrideToolchain (
            p: p.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml
          );
          inherit (craneLib.crateNameFromCargoToml { cargoToml = ./Cargo.toml; }) version;
          cargoPackage = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package;

          rust = import ./nix/rust.nix {
            inherit
              lib
              pkgs
              craneLib
              advisory-db
              ;
          };
          inherit (rust) app;

          compose = import ./nix/compose.nix { inherit lib pkgs; };
          # The nginx of the httpd image, its config check and the dev shell: nixpkgs' build without
          # the embedded Perl module (on by default), which the config does not use and which would
          # put perl and its libraries in the image.
          nginx = pkgs.nginx.override { withPerl = false; };
          # The formatter of `nix fmt` (below), the nix-format check and CI (.ci/nix-checks.sh):
          # nixfmt-rs, byte-identical to nixfmt (the official style), and on crates.io.
          nixfmt = pkgs.nixfmt-rs;

          n2c = nix2container.packages.${system};
          images = import ./nix/images.nix {
            inherit
              lib
              pkgs
              layout
              app
              version
              nginx
              ;
            inherit (n2c) nix2container;
            skopeo = n2c.skopeo-nix2container;
            source =
              cargoPackage.repository
                or (throw "Cargo.toml: set package.repository (the images' org.opencontainers.image.source label)");
            # A clean tree's commit; a dirty tree gives `<commit>-dirty`.
            revision = self.rev or self.dirtyRev or "unknown";
          };
          sboms = import ./nix/sbom.nix {
            inherit
              pkgs
              bombon
              images
              app
              ;
          };
        in
        {
          packages = {
            inherit app;
            inherit (images) static;
            default = app;
          }
          // lib.optionalAttrs isLinux {
            inherit (images)
              applayer
              staticlayer
              applayer-archive
              staticlayer-archive
              ;
            inherit (sboms) sbom-app sbom-httpd;
          };

          checks =
            rust.checks
            // import ./nix/checks.nix {
              inherit
                lib
                pkgs
                layout
                version
                nixfmt
                nginx
                ;
              inherit (compose) composeSrc;
            }
            // {
              inherit (images) static;
            }
            // lib.optionalAttrs isLinux (
              {
                inherit (images) applayer staticlayer;
              }
              // import ./nix/image-contract.nix {
                inherit
                  lib
                  pkgs
                  layout
                  images
                  app
                  version
                  ;
              }
            )
            // lib.optionalAttrs (system == "x86_64-linux") {
              vm-test = import ./nix/vm-test.nix {
                inherit
                  lib
                  pkgs
                  images
                  version
                  ;
                inherit (images) static;
                inherit (compose) composeSrc composeSecrets;
                standins = import ./nix/standins.nix {
                  inherit lib pkgs;
                  inherit (n2c) nix2container;
                };
              };
            };

          apps = lib.optionalAttrs isLinux (
            import ./nix/apps.nix {
              inherit
                lib
                pkgs
                images
                version
                ;
              skopeo = n2c.skopeo-nix2container;
            }
            // import ./nix/script-apps.nix { inherit lib pkgs; }
          );

          # The cargo checks' inputs (toolchain, PostgreSQL and Redis for the tests) plus the tools
          # of the compose and image workflow.
          devShells.default = craneLib.devShell {
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
              # scripts/watch.sh: rebuilds and restarts the dev stack on each change.
              pkgs.watchexec
            ];
          };

          # `nix fmt` with no path passes none (Nix >= 2.25) and a bare nixfmt would read
          # stdin, so default to the current directory (nixfmt-rs walks it for *.nix files,
          # skipping git-ignored ones).
          formatter = pkgs.writeShellApplication {
            name = "nix-fmt";
            runtimeInputs = [ nixfmt ];
            text = ''
              if [ "$#" -eq 0 ]; then set -- .; fi
              exec nixfmt "$@"
            '';
          };
        };

      outputs = lib.genAttrs systems perSystem;
    in
    {
      packages = lib.mapAttrs (_: o: o.packages) outputs;
      checks = lib.mapAttrs (_: o: o.checks) outputs;
      apps = lib.mapAttrs (_: o: o.apps) outputs;
      devShells = lib.mapAttrs (_: o: o.devShells) outputs;
      formatter = lib.mapAttrs (_: o: o.formatter) outputs;
    };
}
