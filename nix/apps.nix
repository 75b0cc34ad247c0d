# `nix run .#load`, `nix run .#dev` and `nix run .#push -- REGISTRY VERSION`.
{
  lib,
  pkgs,
  images,
  version,
}:
let
  inherit (images) applayer staticlayer;

  mkApp = drv: description: {
    type = "app";
    program = lib.getExe drv;
    meta = { inherit description; };
  };

  # nix2container's copyToDockerDaemon streams the layers straight from the store into the
  # daemon: no tarball is written, and layers Docker already has are skipped.
  load = pkgs.writeShellApplication {
    name = "load-images";
    text = ''
      ${applayer.copyToDockerDaemon}/bin/copy-to-docker-daemon
      ${staticlayer.copyToDockerDaemon}/bin/copy-to-docker-daemon
    '';
  };

  dev = pkgs.writeShellApplication {
    name = "dev-stack";
    runtimeInputs = [ pkgs.docker-compose ];
    text = ''
      if [ ! -f compose/dev.yml ]; then
        echo "dev-stack: run it from the repository root (compose/dev.yml not found)" >&2
        exit 1
      fi
      ${lib.getExe load}
      export APP_VERSION=${version}
      exec docker-compose -f compose/dev.yml up "$@"
    '';
  };

  push = pkgs.writeShellApplication {
    name = "push-images";
    text = ''
      if [ "$#" -lt 2 ]; then
        echo "usage: nix run .#push -- REGISTRY VERSION [skopeo copy options...]" >&2
        echo "  e.g. nix run .#push -- ghcr.io/OWNER ${version} --dest-creds USER:TOKEN" >&2
        exit 2
      fi
      registry=$1
      tag=$2
      shift 2
      ${applayer.copyTo}/bin/copy-to "$@" "docker://$registry/${applayer.imageName}:$tag"
      ${staticlayer.copyTo}/bin/copy-to "$@" "docker://$registry/${staticlayer.imageName}:$tag"
    '';
  };
in
{
  load = mkApp load "Load the app and httpd images into the local Docker daemon";
  dev = mkApp dev "Load both images and run the development stack (compose/dev.yml)";
  push = mkApp push "Push both images to REGISTRY under the tag VERSION";
}
