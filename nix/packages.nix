# The flake's packages under their public names. `static` and `staticlayer` keep the seed's
# Dockerfile target names (staticbuilder, staticlayer); everywhere in nix/ they are `staticFiles`
# (the collected static files) and `httpd` (the nginx image, docker-sample/httpd).
{
  lib,
  pkgs,
  callPackage,
  app,
  images,
}:
{
  inherit app;
  default = app;
  static = images.staticFiles;
}
// lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
  inherit (images) applayer applayer-archive;
  staticlayer = images.httpd;
  staticlayer-archive = images.httpd-archive;
  inherit (callPackage ./sbom.nix { }) sbom-app sbom-httpd;
}
