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

  # Wiring only: per system, one scope (nixpkgs plus the project's values below) through which
  # every nix/*.nix file is called, taking what it names from it. nix/README.md: what each builds.
  outputs =
    { self, nixpkgs, ... }@inputs:
    let
      inherit (nixpkgs) lib;

      # The app, its checks, the dev shell and watch mode build everywhere; the images, the apps
      # that load or push them and the VM test are Linux-only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];

      perSystem =
        system:
        let
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ inputs.rust-overlay.overlays.default ];
          };
          n2c = inputs.nix2container.packages.${system};

          # lib.callPackageWith adds `override*` to an attribute set it returns; the flake's outputs
          # must hold only derivations and apps, so the scope's callPackage drops them.
          notOverride = n: _: !lib.hasPrefix "override" n;
          scope = pkgs // {
            callPackage = f: args: lib.filterAttrs notOverride (lib.callPackageWith scope f args);
            inherit (inputs) advisory-db bombon;
            inherit (n2c) nix2container;
            # nix2container's patched skopeo: it reads every transport, `nix:` (an image JSON) too.
            skopeo = n2c.skopeo-nix2container;
            # The toolchain of rust-toolchain.toml, the file rustup reads on the plain cargo path.
            craneLib = (inputs.crane.mkLib pkgs).overrideToolchain (
              p: p.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml
            );
            inherit (scope.craneLib.crateNameFromCargoToml { cargoToml = ./Cargo.toml; }) version;
            # The image layout contract, also read by tests/e2e/standins.sh.
            layout = lib.importJSON ./nix/image.json;
            # The images' org.opencontainers.image.source and .revision labels.
            source =
              (lib.importTOML ./Cargo.toml).package.repository
                or (throw "Cargo.toml: set package.repository (the images' org.opencontainers.image.source label)");
            # A clean tree's commit; a dirty tree gives `<commit>-dirty`.
            revision = self.rev or self.dirtyRev or "unknown";
            # The nginx of the httpd image, its config check and the dev shell: without the embedded
            # Perl module (on by default), which the config does not use and which would put perl
            # and its libraries in the image.
            nginx = pkgs.nginx.override { withPerl = false; };
            # `nix fmt`, the nix-format check and CI (.ci/nix-lint.sh): nixfmt-rs, byte-identical
            # to nixfmt (the official style), and on crates.io.
            nixfmt = pkgs.nixfmt-rs;
            rust = scope.callPackage ./nix/rust.nix { };
            inherit (scope.rust) app;
            images = scope.callPackage ./nix/images.nix { };
            inherit (scope.callPackage ./nix/compose.nix { }) composeSrc composeSecrets;
            packages = scope.callPackage ./nix/packages.nix { };
          };
          inherit (scope) callPackage;
        in
        {
          inherit (scope) packages;
          checks = callPackage ./nix/checks.nix { };
          apps =
            callPackage ./nix/watch-app.nix { }
            // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux (
              callPackage ./nix/apps.nix { } // callPackage ./nix/script-apps.nix { }
            );
          devShells.default = callPackage ./nix/dev-shell.nix { };
          formatter = callPackage ./nix/formatter.nix { };
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
