#!/usr/bin/env python3
"""The crate list cargo-auditable embeds in a Rust binary, read back and checked against Cargo.lock.

Image scanners (Trivy, grype, syft) find the Rust crates of a binary only through this data: cargo-auditable puts
the dependency tree, as zlib-compressed JSON, in the ELF section `.dep-v0`. The flake (nix/rust.nix) and the e2e
suite's cargo build (tests/e2e/run.sh) both build with `cargo auditable build`; this checks that the data is there
and true:

  1. the binary has a `.dep-v0` section that inflates to JSON with one root package: this crate, at the version
     of Cargo.toml;
  2. every package in it is in Cargo.lock with the same version and the same kind of source (crates.io, local…),
     and every dependency edge in it is one Cargo.lock records;
  3. no crate is missing from it: everything `cargo tree` compiles for this crate on the binary's target (normal
     and build dependencies, features as `cargo build` resolves them) is listed, since a crate missing here is a
     vulnerability a scanner cannot see;
  4. it lists nothing else than what `cargo metadata --filter-platform TARGET` resolves from this crate through
     normal and build edges. cargo-auditable records that resolve, per package (so app and httpd-start carry the
     same list), and it is a little wider than `cargo tree`: metadata is the dependency resolver's view (one feature
     set per crate, dev-dependencies' features included, optional dependencies named only by weak features such as
     sqlx's `sqlx-mysql?/chrono` kept), while the build's feature resolver enables less. Here that is 13 crates,
     sqlx-mysql and sqlx-sqlite among them, printed as "not compiled in": a scanner may report them, falsely.

The section is read here with Python's own ELF parsing and zlib, so no extra tool is needed; `rust-audit-info
BINARY` (crates.io, the format's reference reader) prints the same JSON (compared once, nix/README.md). Steps 3 and 4
need cargo and the crates' manifests (downloaded, or vendored: the flake's check sets CARGO_NET_OFFLINE).

Usage: audit_data.py [--repo DIR] BINARY...   (exit 0 when every binary passes, 1 otherwise; prints what differs)
"""

import argparse
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import tomllib
import zlib

SECTION = ".dep-v0"
# The e_machine values of the targets the images are built for, and the target triple `cargo tree` resolves for.
TARGETS = {62: "x86_64-unknown-linux-gnu", 183: "aarch64-unknown-linux-gnu"}
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


class AuditError(Exception):
    pass


def elf_sections(path):
    """(e_machine, {section name: bytes}) of an ELF file; AuditError if it is not one."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise AuditError("not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        machine, = struct.unpack_from(end + "H", data, 18)
        shoff, = struct.unpack_from(end + "Q", data, 40)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 58)
        shdr = end + "IIQQQQIIQQ"
    else:
        machine, = struct.unpack_from(end + "H", data, 18)
        shoff, = struct.unpack_from(end + "I", data, 32)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 46)
        shdr = end + "IIIIIIIIII"
    headers = [struct.unpack_from(shdr, data, shoff + i * shentsize) for i in range(shnum)]
    # Fields: name, type, flags, addr, offset, size, ... ; SHT_NOBITS (8) has no bytes in the file.
    names = headers[shstrndx]
    strtab = data[names[4]:names[4] + names[5]]
    sections = {}
    for h in headers:
        name = strtab[h[0]:strtab.index(b"\0", h[0])].decode()
        sections[name] = b"" if h[1] == 8 else data[h[4]:h[4] + h[5]]
    return machine, sections


def read_audit_data(path):
    """(target triple or None, the audit JSON) of a binary; AuditError when it carries none."""
    machine, sections = elf_sections(path)
    if SECTION not in sections:
        raise AuditError(f"no {SECTION} section: not built with `cargo auditable build` "
                         f"(install: cargo install cargo-auditable --locked)")
    try:
        return TARGETS.get(machine), json.loads(zlib.decompress(sections[SECTION]))
    except (zlib.error, ValueError) as e:
        raise AuditError(f"{SECTION} is not zlib-compressed JSON: {e}") from e


def lock_index(lock_path):
    """{(name, version): {"source": str or None, "deps": {(name, version)}}} from Cargo.lock."""
    with open(lock_path, "rb") as f:
        packages = tomllib.load(f).get("package", [])
    versions = {}
    for p in packages:
        versions.setdefault(p["name"], []).append(p["version"])
    index = {}
    for p in packages:
        deps = set()
        # A lock entry names a dependency "name", or "name version" when several versions are locked,
        # optionally followed by " (source)".
        for spec in p.get("dependencies", []):
            parts = spec.split(" ")
            deps.add((parts[0], parts[1] if len(parts) > 1 else versions[parts[0]][0]))
        index[(p["name"], p["version"])] = {"source": p.get("source"), "deps": deps}
    return index


def source_kind(lock_source):
    """A Cargo.lock source as cargo-auditable names it."""
    if lock_source is None:
        return "local"
    if lock_source == CRATES_IO:
        return "crates.io"
    if lock_source.startswith("git+"):
        return "git"
    if lock_source.startswith(("registry+", "sparse+")):
        return "registry"
    return "other"


def run_cargo(args):
    cmd = ["cargo", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as e:
        raise AuditError("cargo is missing (install Rust with rustup): it gives the expected crate set") from e
    if p.returncode != 0:
        raise AuditError(f"{shlex.join(cmd)} failed: {p.stderr.strip()[-1500:]}")
    return p.stdout


def cargo_tree(repo, package, target):
    """{(name, version)} `cargo tree` compiles for the package on the target (normal and build edges)."""
    out = run_cargo(["tree", "--locked", "--manifest-path", os.path.join(repo, "Cargo.toml"), "--package", package,
                     "--edges", "normal,build", "--target", target, "--prefix", "none", "--format", "{p}"])
    found = {(m.group(1), m.group(2)) for m in re.finditer(r"^(\S+) v(\S+)", out, re.M)}
    if not found:
        raise AuditError("`cargo tree` listed no package")
    return found


def cargo_metadata(repo, package, target):
    """{(name, version)} reachable from the package in `cargo metadata`'s resolve through normal and build edges:
    what cargo-auditable records."""
    meta = json.loads(run_cargo(["metadata", "--locked", "--format-version", "1", "--manifest-path",
                                 os.path.join(repo, "Cargo.toml"), "--filter-platform", target]))
    by_id = {p["id"]: (p["name"], p["version"]) for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    roots = [i for i in meta["workspace_members"] if by_id[i][0] == package]
    seen, todo = set(), roots
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo += [d["pkg"] for d in nodes[node]["deps"] if any(k["kind"] in (None, "build") for k in d["dep_kinds"])]
    return {by_id[i] for i in seen}


def lock_problems(data, lock, root):
    """What in one binary's audit data disagrees with Cargo.toml and Cargo.lock, as sentences (empty: nothing)."""
    out, edges = [], []
    pkgs = data.get("packages")
    if not isinstance(pkgs, list) or not pkgs:
        return ["the audit data has no package list"]
    got_roots = sorted(f"{p.get('name')} {p.get('version')}" for p in pkgs if p.get("root"))
    if got_roots != [f"{root[0]} {root[1]}"]:
        out.append(f"root package(s) {got_roots}, expected ['{root[0]} {root[1]}'] (Cargo.toml)")
    for p in pkgs:
        key = (p["name"], p["version"])
        if key not in lock:
            locked = sorted(v for n, v in lock if n == p["name"])
            out.append(f"{p['name']} {p['version']} is not in Cargo.lock (locked versions: {locked or 'none'})")
            continue
        want = source_kind(lock[key]["source"])
        if p.get("source") != want:
            out.append(f"{p['name']} {p['version']}: source {p.get('source')!r}, Cargo.lock says {want!r}")
        for i in p.get("dependencies", []):
            dep = (pkgs[i]["name"], pkgs[i]["version"])
            if dep not in lock[key]["deps"]:
                edges.append(f"{p['name']} {p['version']} -> {dep[0]} {dep[1]}: not a dependency in Cargo.lock")
    return out + edges  # a wrong version first: it also makes every edge to it wrong


def set_problems(embedded, tree, resolved, package):
    """The audit data's crate set against `cargo tree` (nothing compiled in may be missing) and `cargo metadata`."""
    out = [f"{n} {v}: compiled in (`cargo tree`) but missing from the binary's audit data"
           for n, v in sorted(tree - embedded)]
    out += [f"{n} {v}: in the binary's audit data but not in `cargo metadata`'s resolve of {package}"
            for n, v in sorted(embedded - resolved)]
    out += [f"{n} {v}: in `cargo metadata`'s resolve of {package} but missing from the binary's audit data"
            for n, v in sorted(resolved - embedded)]
    return out


def check_binary(path, repo, cargo_cache=None):
    """(ok, one-line summary or the problems) for one binary, against repo's Cargo.toml and Cargo.lock.
    cargo_cache ({} shared by the caller) runs cargo once per target for several binaries."""
    with open(os.path.join(repo, "Cargo.toml"), "rb") as f:
        package = tomllib.load(f)["package"]
    root = (package["name"], package["version"])
    cache = cargo_cache if cargo_cache is not None else {}
    try:
        target, data = read_audit_data(path)
        if target is None:
            raise AuditError("an ELF machine this check has no target triple for")
        found = lock_problems(data, lock_index(os.path.join(repo, "Cargo.lock")), root)
        embedded = {(p["name"], p["version"]) for p in data["packages"]}
        # The lock comparison above is reported even when cargo cannot resolve (an edited lock, no cargo).
        try:
            if target not in cache:
                cache[target] = cargo_tree(repo, root[0], target), cargo_metadata(repo, root[0], target)
            tree, resolved = cache[target]
            found += set_problems(embedded, tree, resolved, root[0])
        except AuditError as e:
            found.append(str(e))
    except AuditError as e:
        return False, str(e)
    except (OSError, KeyError, IndexError, TypeError, struct.error) as e:
        return False, f"unreadable audit data: {e!r}"
    if found:
        return False, f"{len(found)} problem(s): " + "; ".join(found[:20]) + (" …" if len(found) > 20 else "")
    kinds = {}
    for p in data["packages"]:
        kinds[p.get("kind", "runtime")] = kinds.get(p.get("kind", "runtime"), 0) + 1
    extra = sorted(f"{n} {v}" for n, v in embedded - tree)
    return True, (f"{len(embedded)} packages ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
                  f"each at its Cargo.lock version and source; all {len(tree)} that `cargo tree` compiles in for "
                  f"{target}; {len(extra)} more from `cargo metadata`'s resolve, not compiled in: {', '.join(extra)}")


def main():
    ap = argparse.ArgumentParser(description="Check a binary's cargo-auditable data against Cargo.lock.")
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."),
                    help="the directory of Cargo.toml and Cargo.lock (default: this repository)")
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    failed, cache = 0, {}
    for path in args.binaries:
        ok, msg = check_binary(path, args.repo, cache)
        print(f"{'PASS' if ok else 'FAIL'}: audit data of {path}: {msg}")
        failed += not ok
    print(f"{len(args.binaries) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
