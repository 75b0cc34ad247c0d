# `nix run .#load`, `.#dev`, `.#layers`, and the release apps: `.#push`, `.#push-arch`, `.#push-index`.
{
  lib,
  pkgs,
  images,
  version,
  # nix2container's patched skopeo: reads every transport, `nix:` (an image JSON) included.
  skopeo,
}:
let
  inherit (images) applayer httpd;

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
    httpd.imageName
  ];

  # nix2container's copyToDockerDaemon streams the layers straight from the store into the
  # daemon: no tarball is written, and layers Docker already has are skipped.
  load = pkgs.writeShellApplication {
    name = "load-images";
    text = ''
      ${applayer.copyToDockerDaemon}/bin/copy-to-docker-daemon
      ${httpd.copyToDockerDaemon}/bin/copy-to-docker-daemon
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
      export DEV_VERSION=${version}
      exec docker-compose -f compose/dev.yml up "$@"
    '';
  };

  # Each image's layers from nix2container's image JSON (digest, size, the store paths in each), and,
  # given the previous release, how many of its bytes are new: a layer whose uncompressed digest
  # (diff_id) is already in the previous image's config is neither pushed nor pulled again.
  layers = pkgs.writeShellApplication {
    name = "layers";
    runtimeInputs = [
      pkgs.jq
      pkgs.coreutils
      skopeo
    ];
    text = ''
      usage() {
        echo "usage: nix run .#layers [-- REGISTRY VERSION | -- [--app REF] [--httpd REF]]" >&2
        echo "  each image's layers; with a previous image, the bytes this build changes against it." >&2
        echo "  REGISTRY VERSION compares with REGISTRY/<image>:VERSION; REF is any skopeo reference:" >&2
        echo "  docker://…, docker-archive:FILE, oci-archive:FILE, nix:/nix/store/…-image-app.json" >&2
        exit 2
      }
      prev_app=""
      prev_httpd=""
      case $# in
        0) ;;
        2) if [ "''${1#--}" = "$1" ]; then
             prev_app=docker://$1/${applayer.imageName}:$2
             prev_httpd=docker://$1/${httpd.imageName}:$2
           elif [ "$1" = --app ]; then prev_app=$2
           elif [ "$1" = --httpd ]; then prev_httpd=$2
           else usage
           fi ;;
        4) if [ "$1" = --app ] && [ "$3" = --httpd ]; then prev_app=$2; prev_httpd=$4
           elif [ "$1" = --httpd ] && [ "$3" = --app ]; then prev_httpd=$2; prev_app=$4
           else usage
           fi ;;
        *) usage ;;
      esac

      human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }

      # report IMAGE_JSON NAME:TAG [PREVIOUS_REF]
      report() {
        local json=$1 ref=$2 prev=''${3:-} n total i size diff_id new=0 new_bytes=0 prev_ids
        n=$(jq '.layers | length' "$json")
        total=$(jq '[.layers[].size] | add' "$json")
        echo "$ref ($(jq -r .arch "$json")): $n layers, $(human "$total") uncompressed"
        for ((i = 0; i < n; i++)); do
          size=$(jq ".layers[$i].size" "$json")
          echo "  layer $((i + 1)): $(human "$size")  $(jq -r ".layers[$i].digest" "$json")"
          jq -r "(.layers[$i].paths // [])[].path" "$json" | sort -u | while read -r path; do
            printf '    %9s  %s\n' "$(human "$(du -sb "$path" | cut -f1)")" "$path"
          done
        done
        [ -n "$prev" ] || return 0
        if ! prev_ids=$(skopeo inspect --config "$prev" | jq -r '.rootfs.diff_ids[]'); then
          echo "layers: cannot read the config of $prev" >&2
          return 1
        fi
        for ((i = 0; i < n; i++)); do
          diff_id=$(jq -r ".layers[$i].diff_ids" "$json")
          if ! grep -qxF "$diff_id" <<<"$prev_ids"; then
            new=$((new + 1))
            new_bytes=$((new_bytes + $(jq ".layers[$i].size" "$json")))
          fi
        done
        echo "  against $prev: $new of $n layers new, $(human "$new_bytes") of $(human "$total") to push and pull"
      }

      report ${applayer} ${applayer.imageName}:${applayer.imageTag} "$prev_app"
      report ${httpd} ${httpd.imageName}:${httpd.imageTag} "$prev_httpd"
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
          httpd
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
  layers = mkApp layers "Each image's layers (size, store paths) and, given a previous image, the bytes that changed";
  push = mkApp push "Push this system's images under VERSION-<arch>, then each image's index under VERSION";
  push-arch = mkApp pushArch "Push this system's images to REGISTRY under the tag VERSION-<arch>";
  push-index = mkApp pushIndex "Write REGISTRY/<image>:VERSION as an OCI index of the VERSION-<arch> tags";
}
