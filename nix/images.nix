# The two images, `applayer` (the app) and `httpd` (nginx), laid out as nix/image.json says, the
# collected static files the httpd image serves, and a `docker load` archive of each image.
#
# Layers are cut by how often they change: the bottom layer of each image holds what changes
# only with nixpkgs or the layout (glibc, certificates, users, nginx); the top layer holds what
# every commit changes (the app, the static files and nginx config). An app-only change
# therefore rebuilds and pushes one small layer.
{
  lib,
  pkgs,
  nix2container,
  skopeo,
  layout,
  app,
  version,
  nginx,
  # The images' org.opencontainers.image.source and .revision labels.
  source,
  revision,
}:
let
  inherit (nix2container) buildImage buildLayer;

  labels = {
    "org.opencontainers.image.source" = source;
    "org.opencontainers.image.revision" = revision;
    "org.opencontainers.image.version" = version;
  };

  # `app collectstatic`: the files nginx serves. The httpd image must not carry the app, so
  # the build fails if any output file refers to it.
  staticFiles = pkgs.runCommand "app-static-${version}" { disallowedRequisites = [ app ]; } ''
    ${lib.getExe app} collectstatic "$out"
  '';

  # Files every image needs at / : the users, the name service switch and the writable
  # directories. `extra` adds image-specific entries.
  mkBaseRoot =
    name: spec: extra:
    let
      u = spec.user;
    in
    pkgs.runCommand "${name}-base-root" { } ''
      mkdir -p "$out/etc" ${lib.concatMapStringsSep " " (d: "\"$out${d}\"") spec.writable}
      cat > "$out/etc/passwd" <<EOF
      root:x:0:0:root:/root:/sbin/nologin
      ${u.name}:x:${toString u.uid}:${toString u.gid}::${u.home}:/sbin/nologin
      EOF
      cat > "$out/etc/group" <<EOF
      root:x:0:
      ${u.group}:x:${toString u.gid}:
      EOF
      # /etc/hosts (written by Docker) first, then DNS (Docker's resolver knows the service names).
      echo 'hosts: files dns' > "$out/etc/nsswitch.conf"
      ${extra}
    '';

  # The store cannot hold a world-writable mode, so the writable directories get mode 1777
  # (like /tmp) as the layer tar is written.
  writablePerms =
    baseRoot: spec:
    map (d: {
      path = baseRoot;
      regex = "^${lib.escapeRegex "${baseRoot}${d}"}$";
      mode = "1777";
    }) spec.writable;

  # The image config (OCI image-spec config fields) of one section of image.json.
  mkConfig = spec: {
    Entrypoint = spec.entrypoint;
    Cmd = spec.cmd;
    User = "${toString spec.user.uid}:${toString spec.user.gid}";
    WorkingDir = spec.workdir;
    Env = lib.mapAttrsToList (k: v: "${k}=${v}") spec.env;
    ExposedPorts = lib.listToAttrs (map (p: lib.nameValuePair "${toString p}/tcp" { }) spec.ports);
    Labels = labels;
  };

  appSpec = layout.app;
  httpdSpec = layout.httpd;

  # The configs and the paths given to each image's layers, exported for the evaluation-time
  # checks in nix/image-contract.nix.
  configs = {
    app = mkConfig appSpec;
    httpd = mkConfig httpdSpec;
  };
  layerPaths = {
    app = [
      app
      appBase
      appLink
    ];
    httpd = [
      httpdBase
      launcher
      site
    ];
  };

  appBase = mkBaseRoot "app" appSpec ''
    mkdir -p "$out${dirOf appSpec.env.SSL_CERT_FILE}"
    ln -s ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt "$out${appSpec.env.SSL_CERT_FILE}"
  '';

  appLink = pkgs.runCommand "app-root" { } ''
    mkdir -p "$out${dirOf appSpec.binary}"
    ln -s ${lib.getExe app} "$out${appSpec.binary}"
  '';

  applayer = buildImage {
    name = appSpec.image;
    tag = version;
    layers = [
      # Bottom layer: the app's runtime closure without the app itself (`ignore` drops the
      # app but keeps what it references: glibc, libgcc…), plus certificates, users and /tmp.
      # Derived from the app's real closure, so nothing it needs can land in the top layer.
      (buildLayer {
        deps = [ app ];
        ignore = app;
        copyToRoot = [ appBase ];
        perms = writablePerms appBase appSpec;
      })
    ];
    # Top layer: /bin/app and the app's store path, the only paths an app change touches.
    copyToRoot = [ appLink ];
    config = configs.app;
  };

  httpdBase = mkBaseRoot "httpd" httpdSpec ''
    mkdir -p "$out${dirOf httpdSpec.binary}"
    ln -s ${lib.getExe nginx} "$out${httpdSpec.binary}"
  '';

  # The image's entry point, httpd-start (src/bin/httpd-start: renders the nginx config from the
  # environment and supervises nginx), copied out of the app package, which builds it anyway.
  # A copy rather than a second crane package (`cargoExtraArgs = "--locked --bin httpd-start"`):
  # that would compile the whole crate (library, build script) once more for one small binary, and
  # its store path would change with every app commit just the same, since its source is the app's.
  # httpd-start uses std, tokio and libc only, never the app library; `disallowedRequisites` fails
  # this build if the copy still refers to the app's store path, so the image cannot carry the app.
  launcher =
    pkgs.runCommand "httpd-start-${version}"
      {
        disallowedRequisites = [ app ];
        meta.mainProgram = "httpd-start";
      }
      ''
        install -D -m 755 ${app}/bin/httpd-start "$out${httpdSpec.launcher}"
      '';

  # The config is copied, not linked, so the top layer does not also carry the flake source.
  site = pkgs.runCommand "httpd-site" { } ''
    mkdir -p "$out${dirOf httpdSpec.config}" "$out${dirOf httpdSpec.static_root}"
    cp ${../. + "/${httpdSpec.config_source}"} "$out${httpdSpec.config}"
    cp -r ${staticFiles} "$out${httpdSpec.static_root}"
  '';

  httpd = buildImage {
    name = httpdSpec.image;
    tag = version;
    # Bottom layer: nginx and its closure, users, /bin/nginx and /tmp, and what httpd-start links
    # (glibc, libgcc: `ignore` keeps the closure without httpd-start itself, as for applayer), so the
    # libraries are not sent again with each release.
    layers = [
      (buildLayer {
        deps = [ launcher ];
        ignore = launcher;
        copyToRoot = [ httpdBase ];
        perms = writablePerms httpdBase httpdSpec;
      })
    ];
    # Top layer: /bin/httpd-start, the nginx config and the collected static files, what a commit
    # changes.
    copyToRoot = [
      launcher
      site
    ];
    config = configs.httpd;
  };

  # A docker-archive tarball (`docker load -i`), named and tagged as the compose files expect.
  # nix2container itself writes no tarball; its patched skopeo reads the image through the
  # `nix:` transport. The image JSON references every layer's store paths, so they are all
  # inputs of this derivation.
  mkArchive =
    image:
    pkgs.runCommand "${lib.replaceStrings [ "/" ] [ "-" ] image.imageName}-${image.imageTag}.tar"
      { nativeBuildInputs = [ skopeo ]; }
      ''
        export HOME=$TMPDIR
        skopeo --insecure-policy --tmpdir "$TMPDIR" copy \
          nix:${image} "docker-archive:$out:${image.imageName}:${image.imageTag}"
      '';
in
{
  inherit
    applayer
    httpd
    mkArchive
    staticFiles
    launcher
    configs
    layerPaths
    ;
  applayer-archive = mkArchive applayer;
  httpd-archive = mkArchive httpd;
}
