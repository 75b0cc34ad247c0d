# The formatter of `nix fmt`. With no path `nix fmt` passes none (Nix >= 2.25) and a bare nixfmt
# would read stdin, so default to the current directory (nixfmt-rs walks it for *.nix files,
# skipping git-ignored ones).
{ pkgs, nixfmt }:
pkgs.writeShellApplication {
  name = "nix-fmt";
  runtimeInputs = [ nixfmt ];
  text = ''
    if [ "$#" -eq 0 ]; then set -- .; fi
    exec nixfmt "$@"
  '';
}
