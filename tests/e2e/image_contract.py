"""The images the suite runs match the image contract the Nix images are checked against.

nix/image-contract.nix fails the flake's evaluation unless the Nix images' config (user, entrypoint, cmd, env,
exposed ports, workdir) equals nix/image.json and their labels are the OCI source/revision/version labels. This
check holds the images the suite runs (the stand-ins, or with E2E_REAL_IMAGES=1 the loaded Nix images) to the same
contract through `docker image inspect`, so a change on one side that the other misses fails. The httpd image's
entry point, httpd-start, is also run inside the image: it must be there, run with the image's libraries, and its
`check` (the compose healthcheck: render, then `nginx -t`) must pass on the shipped config.

Both images' Rust binaries (/bin/app, /bin/httpd-start) are copied out and their cargo-auditable data (the crate list
Trivy and grype read) is checked against Cargo.lock and `cargo tree` by audit_data.py: the stand-ins' binaries are
built with `cargo auditable build` (run.sh), the Nix images' by the flake's crane build, which checks.app-audit-data
holds to the same reader.
"""

import json
import os
import re
import subprocess
import tempfile

import audit_data
from harness import REPO, TAG, check, log


def expected_config(spec):
    """The config fields of one nix/image.json section, normalised like nix/image-contract.nix."""
    return {
        "User": f"{spec['user']['uid']}:{spec['user']['gid']}",
        "Entrypoint": spec["entrypoint"],
        "Cmd": spec["cmd"] or None,  # Docker reports an empty Cmd as null
        "WorkingDir": spec["workdir"],
        "Env": sorted(f"{k}={v}" for k, v in spec["env"].items()),
        "ExposedPorts": sorted(f"{p}/tcp" for p in spec["ports"]),
    }


def actual_config(config):
    return {
        "User": config.get("User"),
        "Entrypoint": config.get("Entrypoint"),
        "Cmd": config.get("Cmd") or None,
        "WorkingDir": config.get("WorkingDir"),
        "Env": sorted(config.get("Env") or []),
        "ExposedPorts": sorted((config.get("ExposedPorts") or {}).keys()),
    }


def expected_labels():
    """The labels the flake sets (nix/images.nix): source from Cargo.toml, version from Cargo.toml."""
    cargo = open(os.path.join(REPO, "Cargo.toml")).read()
    version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    source = re.search(r'^repository\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    return {"org.opencontainers.image.source": source, "org.opencontainers.image.version": version}


def check_image_contract():
    layout = json.load(open(os.path.join(REPO, "nix", "image.json")))
    labels = expected_labels()
    cargo_cache = {}  # cargo tree and metadata once per target, for both images' binaries
    for section in ("app", "httpd"):
        ref = f"{layout[section]['image']}:{TAG}"
        p = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True)
        if not check(f"image contract: {ref} exists", p.returncode == 0, p.stderr.strip()):
            continue
        config = json.loads(p.stdout)[0]["Config"]
        want, got = expected_config(layout[section]), actual_config(config)
        diff = {k: {"image.json": want[k], "image": got[k]} for k in want if want[k] != got[k]}
        check(f"image contract: {ref} config (user, entrypoint, cmd, env, ports, workdir) = nix/image.json",
              not diff, json.dumps(diff))
        have = config.get("Labels") or {}
        wrong = {k: have.get(k) for k, v in labels.items() if have.get(k) != v}
        revision = have.get("org.opencontainers.image.revision", "")
        check(f"image contract: {ref} carries the flake's OCI labels", not wrong and bool(revision),
              f"wrong or missing: {wrong}, revision={revision!r}")
        binary = layout[section]["binary" if section == "app" else "launcher"]
        check_audit_data(ref, binary, cargo_cache)
        if section == "httpd":
            check_launcher(ref, layout[section])
    log("image contract: checked against nix/image.json, the file nix/image-contract.nix holds the Nix images to")


def check_launcher(ref, spec):
    """httpd-start in the httpd image: the entry point, and it runs there (no network: `nginx -t` resolves nothing)."""
    launcher, config = spec["launcher"], spec["config"]
    check(f"image contract: {ref} entry point is {launcher} (nix/image.json httpd.launcher)",
          spec["entrypoint"][:1] == [launcher], json.dumps(spec["entrypoint"]))

    def run(*args):
        try:
            return subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", launcher, ref, *args],
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, -1, "", f"timed out after {e.timeout} s")

    p = run("check", config)
    check(f"image contract: {ref}: `{launcher} check {config}` (the healthcheck: render, nginx -t) passes",
          p.returncode == 0, f"exit {p.returncode}: {p.stderr.strip()[-1500:]}")
    p = run("render", config)
    rendered = [line for line in p.stdout.splitlines() if line.rstrip().endswith("# SUBST:hosts")]
    check(f"image contract: {ref}: `{launcher} render {config}` fills in the allowed hosts",
          p.returncode == 0 and bool(rendered) and all("server_name localhost 127.0.0.1 [::1];" in line for line in rendered),
          f"exit {p.returncode}: {rendered or p.stderr.strip()[-1500:]}")


def check_audit_data(ref, path, cargo_cache):
    """The binary at `path` in the image carries cargo-auditable's crate list, and it matches Cargo.lock."""
    with tempfile.TemporaryDirectory() as tmp:
        # The images have no shell: copy the file out of a created (never started) container. -L follows the Nix
        # image's /bin/app -> /nix/store/… link inside the container's filesystem.
        p = subprocess.run(["docker", "create", ref], capture_output=True, text=True)
        if p.returncode == 0:
            cid = p.stdout.strip()
            try:
                p = subprocess.run(["docker", "cp", "-L", f"{cid}:{path}", os.path.join(tmp, "bin")],
                                   capture_output=True, text=True)
            finally:
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        if p.returncode == 0:
            ok, detail = audit_data.check_binary(os.path.join(tmp, "bin"), REPO, cargo_cache)
        else:
            ok, detail = False, f"copying {path} out of the image: {p.stderr.strip()}"
    check(f"image contract: {ref}: {path} carries cargo-auditable's crate list (.dep-v0), matching Cargo.lock and "
          f"cargo's resolve", ok, detail)
