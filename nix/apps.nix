# `nix run .#load`, `.#dev`, and the release apps: `.#push`, `.#push-arch`, `.#push-index`.
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

  # The images' architecture as the OCI platform names it (amd64, arm64): the one nix2container
  # writes into the image config, and the suffix of the per-architecture tags.
  arch = pkgs.stdenv.hostPlatform.go.GOARCH;
  # Every architecture the flake builds images for (flake.nix's Linux systems); the index of a
  # release lists each of them.
  allArches = [
    "amd64"
    "arm64"
  ];
  imageNames = [
    applayer.imageName
    staticlayer.imageName
  ];

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

  # The registry credentials of `--dest-creds USER:PASS` (a skopeo option) as regctl's `--host`
  # option for the registry host of $1, so that the one option serves both tools. Without it,
  # both read the credentials of `docker login` (~/.docker/config.json).
  regctlHostFromCreds = ''
    regctl_host_opts() {
      local registry_host=''${1%%/*} creds=""
      shift
      while [ "$#" -gt 0 ]; do
        case $1 in
          --dest-creds) creds=''${2:-}; shift ;;
          --dest-creds=*) creds=''${1#--dest-creds=} ;;
        esac
        shift
      done
      regctl_opts=()
      if [ -n "$creds" ]; then
        regctl_opts=(--host "reg=$registry_host,user=''${creds%%:*},pass=''${creds#*:}")
      fi
    }
  '';

  # This system's two images under REGISTRY/<name>:VERSION-<arch>; prints one line per image,
  # `REGISTRY/<name>:VERSION-<arch>@sha256:…` (skopeo's progress goes to stderr).
  pushArch = pkgs.writeShellApplication {
    name = "push-arch";
    text = ''
      if [ "$#" -lt 2 ]; then
        echo "usage: nix run .#push-arch -- REGISTRY VERSION [skopeo copy options...]" >&2
        echo "  pushes this system's images as REGISTRY/<image>:VERSION-${arch}" >&2
        exit 2
      fi
      registry=$1
      tag=$2-${arch}
      shift 2
      digests=$(mktemp -d)
      trap 'rm -rf "$digests"' EXIT
      ${lib.concatMapStringsSep "\n"
        (image: ''
          ${image.copyTo}/bin/copy-to --digestfile "$digests/d" "$@" \
            "docker://$registry/${image.imageName}:$tag" >&2
          echo "$registry/${image.imageName}:$tag@$(cat "$digests/d")"
        '')
        [
          applayer
          staticlayer
        ]
      }
    '';
  };

  # One OCI index per image under REGISTRY/<name>:VERSION, from the per-architecture tags
  # VERSION-<arch> (each must exist). ARCH... defaults to every architecture the flake builds.
  # Prints `REGISTRY/<name>:VERSION@sha256:…` per index.
  pushIndex = pkgs.writeShellApplication {
    name = "push-index";
    runtimeInputs = [ pkgs.regctl ];
    text = ''
      if [ "$#" -lt 2 ]; then
        echo "usage: nix run .#push-index -- REGISTRY VERSION [ARCH...] [-- skopeo-style --dest-creds USER:PASS]" >&2
        echo "  writes REGISTRY/<image>:VERSION as an OCI index of REGISTRY/<image>:VERSION-<arch>" >&2
        echo "  (ARCH defaults to: ${toString allArches})" >&2
        exit 2
      fi
      registry=$1
      version=$2
      shift 2
      arches=()
      while [ "$#" -gt 0 ] && [ "$1" != -- ]; do arches+=("$1"); shift; done
      if [ "$#" -gt 0 ]; then shift; fi # the --
      [ "''${#arches[@]}" -gt 0 ] || arches=(${toString allArches})
      ${regctlHostFromCreds}
      regctl_host_opts "$registry" "$@"
      for name in ${toString imageNames}; do
        refs=()
        for a in "''${arches[@]}"; do refs+=(--ref "$registry/$name:$version-$a"); done
        digest=$(regctl "''${regctl_opts[@]}" index create "$registry/$name:$version" "''${refs[@]}" \
          --format '{{ printf "%s\n" .Manifest.GetDescriptor.Digest }}')
        echo "$registry/$name:$version@$digest"
      done
    '';
  };

  # The interface of a single-machine release: this system's images (push-arch), then each
  # image's index under VERSION from every VERSION-<arch> tag the registry holds, so a second
  # run on the other architecture completes the index.
  push = pkgs.writeShellApplication {
    name = "push-images";
    runtimeInputs = [ pkgs.regctl ];
    text = ''
      if [ "$#" -lt 2 ]; then
        echo "usage: nix run .#push -- REGISTRY VERSION [skopeo copy options...]" >&2
        echo "  e.g. nix run .#push -- ghcr.io/OWNER ${version} --dest-creds USER:TOKEN" >&2
        exit 2
      fi
      registry=$1
      version=$2
      ${lib.getExe pushArch} "$@"
      shift 2
      ${regctlHostFromCreds}
      regctl_host_opts "$registry" "$@"
      # An architecture is listed when both of its images are in the registry.
      pushed() {
        local name
        for name in ${toString imageNames}; do
          regctl "''${regctl_opts[@]}" image digest "$registry/$name:$version-$1" >/dev/null 2>&1 || return 1
        done
      }
      present=(${arch})
      others=(${toString (lib.remove arch allArches)})
      for a in "''${others[@]}"; do
        if pushed "$a"; then
          present+=("$a")
        else
          echo "push: no $version-$a images in $registry: the indexes list ''${present[*]} only (run push on $a too)" >&2
        fi
      done
      ${lib.getExe pushIndex} "$registry" "$version" "''${present[@]}" -- "$@"
    '';
  };
in
{
  load = mkApp load "Load the app and httpd images into the local Docker daemon";
  dev = mkApp dev "Load both images and run the development stack (compose/dev.yml)";
  push = mkApp push "Push this system's images under VERSION-<arch>, then each image's index under VERSION";
  push-arch = mkApp pushArch "Push this system's images to REGISTRY under the tag VERSION-<arch>";
  push-index = mkApp pushIndex "Write REGISTRY/<image>:VERSION as an OCI index of the VERSION-<arch> tags";
}
