# CycloneDX SBOMs of the two images, with bombon: every store path in each image's runtime
# closure (glibc, nginx, openssl, the CA bundle…) as a component with its version, licence,
# source URL and CPE, plus, for the app image, the Rust crates compiled into the app.
{
  pkgs,
  bombon,
  images,
  app,
}:
let
  inherit (import bombon { inherit pkgs; }) buildBom passthruVendoredSbom;

  # The same derivation as `app` (only passthru changes, so the store path is the one the image
  # holds) with bombon's `bombonVendoredSbom`: the app's source run through `cargo cyclonedx`
  # (runtime crates only, `--no-build-deps`), which bombon merges into the SBOM.
  appWithCrates = passthruVendoredSbom.rust app { inherit pkgs; };
in
{
  # The root is the image itself, whose runtime closure is exactly what its layers hold;
  # bombon drops the closure's unversioned paths (nix2container's layer metadata, the
  # hand-made /etc files). `extraPaths` only brings the app's crate SBOM in: the app is
  # already in the closure.
  sbom-app = buildBom images.applayer { extraPaths = [ appWithCrates ]; };
  sbom-httpd = buildBom images.httpd { };
}
