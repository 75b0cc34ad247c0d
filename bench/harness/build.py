"""The release binary (built unless given) and the size of the stand-in app image made from it."""

import json
import os
import shutil
import subprocess
import time

from .common import REPO, HarnessError, log

def standin_image_size(binary):
    script = os.path.join(REPO, "tests", "e2e", "standins.sh")
    if not os.path.exists(script):
        return None, "n/a (tests/e2e/standins.sh not found)"
    if not shutil.which("docker"):
        return None, "n/a (no docker CLI)"
    try:
        if subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=20).returncode != 0:
            return None, "n/a (no Docker daemon answers)"
    except subprocess.TimeoutExpired:
        return None, "n/a (docker info timed out)"
    with open(os.path.join(REPO, "nix", "image.json")) as f:
        image = json.load(f)["app"]["image"]
    tag = f"bench-{os.getpid()}"
    env = dict(os.environ, APP_BIN=binary, STANDIN_TAG=tag)
    try:
        res = subprocess.run(["bash", script, "build", "app"], env=env, timeout=300, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            return None, f"n/a (standins.sh build app failed: {res.stdout.strip().splitlines()[-1:]})"
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", f"{image}:{tag}"],
                             timeout=30, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            return None, f"n/a (image {image}:{tag} not found after the build)"
        return int(out.stdout.strip()), f"{image}:{tag} built by tests/e2e/standins.sh (removed again)"
    except subprocess.TimeoutExpired:
        return None, "n/a (standins.sh timed out)"
    finally:
        subprocess.run(["bash", script, "remove", "app"], env=env, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def ensure_binary(args):
    if args.binary:
        if not os.access(args.binary, os.X_OK):
            raise HarnessError(f"--binary {args.binary} is not an executable")
        return os.path.abspath(args.binary)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.path.join(target, "release", "app")
    if args.no_build:
        if not os.access(binary, os.X_OK):
            raise HarnessError(f"{binary} is missing (and --no-build was given)")
        return binary
    if not shutil.which("cargo"):
        if os.access(binary, os.X_OK):
            log("no cargo: using the existing release binary as it is")
            return binary
        raise HarnessError("no cargo to build the release binary")
    log("cargo build --release --bin app (a no-op when up to date)")
    env = dict(os.environ, SQLX_OFFLINE="true")
    t = time.monotonic()
    res = subprocess.run(["cargo", "build", "--release", "--bin", "app"], cwd=REPO, env=env, timeout=3600,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise HarnessError("cargo build --release failed:\n" + res.stdout[-3000:])
    log(f"release binary ready ({time.monotonic() - t:.0f} s)")
    return binary


def ensure_hello(args):
    """The reference server (bench/hello.rs, a cargo example behind the `bench` feature), built like the app."""
    return ensure_example(args, "hello", "hello")


def ensure_db_reference(args):
    """The database route's reference (bench/db_reference.rs: tokio-postgres, a connection per thread)."""
    return ensure_example(args, "db_reference", "db-reference")


def ensure_example(args, name, skip):
    """A cargo example behind the `bench` feature, built like the app."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.path.join(target, "release", "examples", name)
    if args.no_build or not shutil.which("cargo"):
        if not os.access(binary, os.X_OK):
            raise HarnessError(f"{binary} is missing (build it with `cargo build --release --features bench "
                               f"--example {name}`, or --skip {skip})")
        return binary
    log(f"cargo build --release --features bench --example {name} (a reference row; a no-op when up to date)")
    env = dict(os.environ, SQLX_OFFLINE="true")
    t = time.monotonic()
    res = subprocess.run(["cargo", "build", "--release", "--features", "bench", "--example", name], cwd=REPO,
                         env=env, timeout=3600, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise HarnessError(f"cargo build --example {name} failed:\n" + res.stdout[-3000:])
    log(f"reference server {name} ready ({time.monotonic() - t:.0f} s)")
    return binary
    log("cargo build --release --features bench --example hello (the reference row; a no-op when up to date)")
    env = dict(os.environ, SQLX_OFFLINE="true")
    t = time.monotonic()
    res = subprocess.run(["cargo", "build", "--release", "--features", "bench", "--example", "hello"], cwd=REPO,
                         env=env, timeout=3600, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise HarnessError("cargo build --example hello failed:\n" + res.stdout[-3000:])
    log(f"reference server ready ({time.monotonic() - t:.0f} s)")
    return binary
