# The Rust side, in crane's quick-start shape: one `buildDepsOnly` whose artifacts the
# package and every cargo check reuse, and one check per lint.
{
  lib,
  pkgs,
  craneLib,
  advisory-db,
}:
let
  root = ../.;

  # crane's cleanCargoSource keeps only Rust and Cargo files. The app also compiles in its
  # migrations, templates, static assets and the sqlx offline query data (.sqlx), so the
  # source is an explicit fileset. A change anywhere else (compose files, docs, Nix, the
  # Docker-level e2e suite in tests/e2e) does not rebuild the app.
  appFiles = [
    ../Cargo.toml
    ../Cargo.lock
    ../rust-toolchain.toml
    ../src
    ../core
    (lib.fileset.difference ../tests (lib.fileset.maybeMissing ../tests/e2e))
    ../migrations
    ../.sqlx
    ../static
    ../templates
  ];
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions appFiles;
  };

  commonArgs = {
    inherit src;
    strictDeps = true;
    # As in crane's quick-start: some crates link libiconv on macOS.
    buildInputs = lib.optionals pkgs.stdenv.hostPlatform.isDarwin [ pkgs.libiconv ];
    # The sqlx query macros check against the committed .sqlx data, never a live database.
    env.SQLX_OFFLINE = "true";
  };

  # Dependencies built once (including dev-dependencies, since crane runs
  # `cargo test --no-run` here), shared by the package, clippy and nextest.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  app = craneLib.buildPackage (
    commonArgs
    // {
      inherit cargoArtifacts;
      # `cargo auditable build` embeds the crate tree (name, version, source of every dependency)
      # as zlib-compressed JSON in the binaries' `.dep-v0` section, which Trivy, grype and syft
      # read: without it a scanner sees no crate in the image. nixpkgs' buildRustPackage does the
      # same by default (a `cargo` wrapper adding `auditable`); here it is this one command, so the
      # deps-only build, clippy and nextest stay plain cargo (clippy has a rustc wrapper of its
      # own). cargo-auditable only wraps the workspace's rustc calls (RUSTC_WORKSPACE_WRAPPER),
      # so cargoArtifacts are reused as they are. Not crane's `cargoWithProfile`: it would put
      # the profile flag between `auditable` and `build`; crane's CARGO_PROFILE is `release`.
      cargoBuildCommand = "cargo auditable build --release";
      nativeBuildInputs = [ pkgs.cargo-auditable ];
      # The integration tests need PostgreSQL and Redis; they run once, in the nextest check.
      doCheck = false;
      # crane strips toolchain paths from the output (removeReferencesToRustToolchainHook);
      # this makes the build fail if one still slips into the runtime closure.
      disallowedRequisites = [ craneLib.rustc ];
      meta.mainProgram = "app";
    }
  );
in
{
  inherit app;

  checks = {
    # Building the package is a check of its own.
    inherit app;

    app-clippy = craneLib.cargoClippy (
      commonArgs
      // {
        inherit cargoArtifacts;
        cargoClippyExtraArgs = "--all-targets -- --deny warnings";
      }
    );

    app-fmt = craneLib.cargoFmt { inherit src; };

    # The package's cargo-auditable data read back from both binaries by the e2e suite's reader
    # (tests/e2e/audit_data.py): every crate at its Cargo.lock version and source, every edge one
    # Cargo.lock records, nothing `cargo tree` compiles in for this system's target missing and
    # nothing beyond `cargo metadata`'s resolve; cargo resolves from crane's vendored sources
    # (mkCargoDerivation writes them into CARGO_HOME; no build artifacts needed).
    app-audit-data = craneLib.mkCargoDerivation (
      commonArgs
      // {
        pnameSuffix = "-audit-data";
        cargoArtifacts = null;
        doInstallCargoArtifacts = false;
        nativeBuildInputs = [ pkgs.python3 ];
        # The sandbox has no network; say so, so that cargo fails at once rather than retrying.
        env = commonArgs.env // {
          CARGO_NET_OFFLINE = "true";
        };
        buildPhaseCargoCommand = ''
          python3 ${../tests/e2e/audit_data.py} --repo . ${app}/bin/app ${app}/bin/httpd-start
        '';
        installPhaseCommand = ''touch "$out"'';
      }
    );

    # Known vulnerabilities, from the pinned advisory-db input (the sandbox has no network).
    app-audit = craneLib.cargoAudit { inherit src advisory-db; };

    # Licences, bans and sources per deny.toml (crane's default checks; advisories are
    # cargo-audit's job above, since cargo-deny would fetch its database).
    app-deny = craneLib.cargoDeny {
      src = lib.fileset.toSource {
        inherit root;
        fileset = lib.fileset.unions (appFiles ++ [ ../deny.toml ]);
      };
    };

    # The integration tests start throwaway PostgreSQL and Redis servers themselves (initdb,
    # pg_ctl, postgres, redis-server from PATH, on free loopback ports in a temp dir) when
    # DATABASE_URL and REDIS_URL are unset, which works inside the build sandbox.
    # tests/httpd_start runs httpd-start with a real nginx (NGINX_BIN: nixpkgs' nginx, with the
    # ssl, http_v2 and limit_req modules; the image's perl-less build is not passed to this file)
    # and `openssl` (certificates, TLS client), and renders the repository's two nginx configs:
    # they are in this check's source only, so a config change reruns the tests without
    # rebuilding the app package.
    app-nextest = craneLib.cargoNextest (
      commonArgs
      // {
        inherit cargoArtifacts;
        src = lib.fileset.toSource {
          inherit root;
          fileset = lib.fileset.unions (
            appFiles
            ++ [
              ../nginx/httpd.conf
              ../nginx/edge.conf
            ]
          );
        };
        nativeBuildInputs = [
          pkgs.postgresql_17
          pkgs.redis
          pkgs.nginx
          (lib.getBin pkgs.openssl)
        ];
        env = commonArgs.env // {
          NGINX_BIN = lib.getExe pkgs.nginx;
        };
        partitions = 1;
        partitionType = "count";
        cargoNextestExtraArgs = "--no-tests=fail";
      }
    );
  };
}
