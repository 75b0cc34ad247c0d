# Checks of what the images will be. Most are evaluation-time: they need no build, so `nix flake
# check --no-build` (and CI's evaluation stage) fails on a broken contract; each is a trivial
# derivation guarded by asserts, and a violated one throws with its message while evaluating.
# Two need the images built: the runtime closure holds no toolchain, and each image fits its
# size budget. Digests (reproducibility) are checked by the GitHub workflow.
{
  lib,
  pkgs,
  layout,
  images,
  app,
  version,
}:
let
  inherit (images)
    configs
    layerPaths
    staticFiles
    launcher
    ;

  # The config fields the layout declares, spelled out from image.json independently of
  # images.nix's mkConfig.
  expected = spec: {
    User = "${toString spec.user.uid}:${toString spec.user.gid}";
    Entrypoint = spec.entrypoint;
    Cmd = spec.cmd;
    WorkingDir = spec.workdir;
    Env = lib.sort lib.lessThan (lib.mapAttrsToList (k: v: k + "=" + v) spec.env);
    ExposedPorts = lib.sort lib.lessThan (map (p: "${toString p}/tcp") spec.ports);
  };
  actual = c: {
    inherit (c)
      User
      Entrypoint
      Cmd
      WorkingDir
      ;
    Env = lib.sort lib.lessThan c.Env;
    ExposedPorts = lib.attrNames c.ExposedPorts;
  };
  configMatches =
    image: spec:
    let
      a = actual configs.${image};
      e = expected spec;
    in
    lib.assertMsg (a == e)
      "image-contract: the ${image} image config ${builtins.toJSON a} differs from nix/image.json ${builtins.toJSON e}"
    && lib.assertMsg (
      configs.${image}.Labels."org.opencontainers.image.version" or null == version
    ) "image-contract: the ${image} image's version label is not ${version}";

  # A shell or a toolchain must never be given to the app image's layers (by store path name;
  # the full runtime closure is only known after a build).
  forbidden = "(bash|dash|busybox|coreutils|rustc|cargo|rust-(std|default|mixed|minimal)|gcc|clang|binutils|.*-deps)(-.*)?";
  forbiddenIn =
    image: lib.filter (p: builtins.match forbidden (lib.getName p) != null) layerPaths.${image};
  noToolchain =
    image:
    lib.assertMsg (forbiddenIn image == [ ])
      "image-contract: the ${image} image's layers are given ${toString (map lib.getName (forbiddenIn image))}";

  # The httpd image must not carry the app: none of its layers' paths is the app, and the
  # static files and the httpd-start copy (the image's entry point, built by the app package)
  # refuse it as a runtime dependency when they are built.
  httpdWithoutApp =
    lib.assertMsg (
      !lib.elem app.drvPath (map (p: p.drvPath) layerPaths.httpd)
    ) "image-contract: the app is given to the httpd image's layers"
    && lib.assertMsg (lib.elem (toString app) (refusedBy staticFiles)) "image-contract: the static files do not refuse the app as a runtime dependency"
    && lib.assertMsg (lib.elem (toString app) (refusedBy launcher)) "image-contract: httpd-start (the httpd image's entry point) does not refuse the app as a runtime dependency"
    && lib.assertMsg (lib.elem launcher.drvPath (
      map (p: p.drvPath) layerPaths.httpd
    )) "image-contract: httpd-start is not given to the httpd image's layers"
    && lib.assertMsg (
      lib.take 1 layout.httpd.entrypoint == [ layout.httpd.launcher ]
    ) "image-contract: the httpd image's entry point is not ${layout.httpd.launcher} (nix/image.json)";

  # mkDerivation keeps disallowedRequisites as the paths' strings (under outputChecks with
  # structured attributes).
  refusedBy =
    drv: map toString (drv.disallowedRequisites or drv.outputChecks.out.disallowedRequisites or [ ]);

  check =
    name: ok:
    assert ok;
    pkgs.runCommand "image-contract-${name}" { } ''touch "$out"'';

  # Size budgets, in MiB of uncompressed layers (what `docker pull` unpacks; the registry stores
  # them gzipped). Estimates, to be lowered to the first real build's size plus ~10%: the app
  # image is the release binary (7.2 MiB, bench/README.md) plus glibc, libgcc and the CA bundle
  # (~40 MiB in nixpkgs); the httpd image is nginx without the embedded-perl module (flake.nix),
  # whose closure holds glibc, openssl, pcre2 and zlib (~40 MiB), and httpd-start (0.8 MiB) with libgcc.
  budgetsMiB = {
    app = 64;
    httpd = 64;
  };
  images' = {
    app = images.applayer;
    httpd = images.httpd;
  };

  # The store path names of a compiler or a build tool: rust-overlay's toolchain (rustc, cargo,
  # rust-std, rust-minimal…), gcc itself (its `-lib`/`-libgcc` outputs, the runtime libraries,
  # are allowed), clang, binutils, and crane's dependency archive (`<crate>-deps-<version>`).
  toolchainNames = "^(rustc|cargo|rust-[a-z]+|gcc|gcc-wrapper|clang|clang-wrapper|binutils|binutils-wrapper)-[0-9]|-deps-[0-9]";

  # Build-time: the image JSON references every store path its layers hold, so its closure is
  # exactly the image's runtime closure.
  closureWithoutToolchain =
    image:
    pkgs.runCommand "image-contract-closure-${image}"
      { closure = pkgs.closureInfo { rootPaths = [ images'.${image} ]; }; }
      ''
        found=$(sed -E 's|^${builtins.storeDir}/[a-z0-9]{32}-||' "$closure/store-paths" \
          | grep -E '${toolchainNames}' | grep -vE -- '-(lib|libgcc)$' || true)
        if [ -n "$found" ]; then
          echo "image-contract: the ${image} image's runtime closure holds a toolchain:" >&2
          echo "$found" >&2
          exit 1
        fi
        touch "$out"
      '';

  # Build-time: the sum of the image's layer sizes, from nix2container's image JSON.
  sizeWithinBudget =
    image:
    pkgs.runCommand "image-contract-size-${image}" { nativeBuildInputs = [ pkgs.jq ]; } ''
      size=$(jq '[.layers[].size] | add' ${images'.${image}})
      budget=$((${toString budgetsMiB.${image}} * 1024 * 1024))
      echo "image-contract: the ${image} image is $size bytes (budget $budget)"
      if [ "$size" -gt "$budget" ]; then
        echo "image-contract: the ${image} image exceeds its budget of ${toString budgetsMiB.${image}} MiB (nix/image-contract.nix)" >&2
        exit 1
      fi
      touch "$out"
    '';
in
{
  image-contract-config = check "config" (
    configMatches "app" layout.app && configMatches "httpd" layout.httpd
  );
  image-contract-no-toolchain = check "no-toolchain" (noToolchain "app" && noToolchain "httpd");
  image-contract-httpd-without-app = check "httpd-without-app" httpdWithoutApp;
  image-contract-closure-app = closureWithoutToolchain "app";
  image-contract-closure-httpd = closureWithoutToolchain "httpd";
  image-contract-size-app = sizeWithinBudget "app";
  image-contract-size-httpd = sizeWithinBudget "httpd";
}
