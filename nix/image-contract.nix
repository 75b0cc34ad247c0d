# Evaluation-time checks of what the images will be: they need no build, so `nix flake check
# --no-build` (and CI's evaluation stage) fails on a broken contract. Each check is a trivial
# derivation guarded by asserts; a violated one throws with its message while evaluating.
# What only a build can show (the real runtime closure, sizes, digests) is checked by the
# builds themselves (`disallowedRequisites`) and the GitHub workflow.
{
  lib,
  pkgs,
  layout,
  images,
  app,
  version,
}:
let
  inherit (images) configs layerPaths static;

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
  forbidden = "(bash|dash|busybox|coreutils|rustc|cargo|rust-(std|default|mixed)|gcc|clang|binutils|.*-deps)(-.*)?";
  forbiddenIn =
    image: lib.filter (p: builtins.match forbidden (lib.getName p) != null) layerPaths.${image};
  noToolchain =
    image:
    lib.assertMsg (forbiddenIn image == [ ])
      "image-contract: the ${image} image's layers are given ${toString (map lib.getName (forbiddenIn image))}";

  # The httpd image must not carry the app: none of its layers' paths is the app, and the
  # static files refuse it as a runtime dependency when they are built.
  httpdWithoutApp =
    lib.assertMsg (
      !lib.elem app.drvPath (map (p: p.drvPath) layerPaths.httpd)
    ) "image-contract: the app is given to the httpd image's layers"
    && lib.assertMsg (lib.elem (toString app) refusedByStatic) "image-contract: the static files do not refuse the app as a runtime dependency";

  # mkDerivation keeps disallowedRequisites as the paths' strings (under outputChecks with
  # structured attributes).
  refusedByStatic = map toString (
    static.disallowedRequisites or static.outputChecks.out.disallowedRequisites or [ ]
  );

  check =
    name: ok:
    assert ok;
    pkgs.runCommand "image-contract-${name}" { } "touch $out";
in
{
  image-contract-config = check "config" (
    configMatches "app" layout.app && configMatches "httpd" layout.static
  );
  image-contract-no-toolchain = check "no-toolchain" (noToolchain "app" && noToolchain "httpd");
  image-contract-httpd-without-app = check "httpd-without-app" httpdWithoutApp;
}
