"""Day-2 commands exactly as the README writes them, in a shell where nothing is exported: they work because
scripts/deploy.sh recorded the deployment in compose/.env. The suite's deploys write that file in the working tree,
so whatever a user had there is put back afterwards (`recorded_deployment()`)."""

import contextlib
import os
import select
import shlex
import subprocess
import time

from harness import REPO, check, log
from readme_blocks import commands

ENV_FILE = os.path.join(REPO, "compose", ".env")
# Nothing exported: only what finds the programs.
CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}


@contextlib.contextmanager
def recorded_deployment():
    """compose/.env as it was before the block, whatever the block's deploys wrote."""
    before = open(ENV_FILE).read() if os.path.exists(ENV_FILE) else None
    try:
        yield
    finally:
        if before is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(ENV_FILE)
        else:
            with open(ENV_FILE, "w") as f:
                f.write(before)


def check_recorded(live, version):
    text = open(ENV_FILE).read() if os.path.exists(ENV_FILE) else ""
    lines = set(text.splitlines())
    check("day-2: scripts/deploy.sh recorded the deployment in compose/.env (version, project, ports)",
          f"APP_VERSION={version}" in lines and f"COMPOSE_PROJECT_NAME={live.project}" in lines
          and any(x.startswith("LIVE_HTTPS_PORT=") for x in lines), text.strip()[-400:])


def run_day2(cmd, timeout=120):
    return subprocess.run(shlex.split(cmd), cwd=REPO, env=CLEAN_ENV, capture_output=True, text=True, timeout=timeout)


def follow(cmd, want, timeout=30):
    """A command that never ends by itself (`logs -f`): its output up to the first line containing `want` (or the
    timeout), and whether it was still running then."""
    p = subprocess.Popen(shlex.split(cmd), cwd=REPO, env=CLEAN_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 1)
        if ready:
            line = p.stdout.readline()
            if not line:
                break  # it ended
            out.append(line)
            if want in line:
                break
    still = p.poll() is None
    p.terminate()
    p.communicate(timeout=30)
    return still, "".join(out)


def day2_commands(live):
    """Every day-2 command of the README but `down` (run_down() ends the phase with it)."""
    for cmd in commands("day2"):
        if cmd.split()[-1] == "down":
            continue
        if cmd.endswith("logs -f"):
            still, out = follow(cmd, '"request_id"')
            json_lines = [ln for ln in out.splitlines() if '"request_id"' in ln]
            check(f"day-2, as written, nothing exported: `{cmd}` streams the stack's JSON log lines",
                  still and json_lines, f"{len(json_lines)} JSON lines; {out.strip()[-300:]}")
            continue
        p = run_day2(cmd)
        out = p.stdout + p.stderr
        want = "edge" if cmd.endswith(" ps") else ""
        check(f"day-2, as written, nothing exported: `{cmd}`", p.returncode == 0 and want in out and out.strip(),
              out.strip()[-300:])


def first_deploy_curls(secrets_parent, https_port, http_port):
    """The `curl` lines after the README's first deploy, as written (from the directory holding `secrets/`); only
    the ports are replaced when the suite could not have the README's (8443, 8001)."""
    for cmd in commands("first-deploy"):
        if not cmd.startswith("curl"):
            continue
        cmd = cmd.replace("localhost:8443", f"localhost:{https_port}").replace("localhost:8001", f"localhost:{http_port}")
        p = subprocess.run(shlex.split(cmd), cwd=secrets_parent, env=CLEAN_ENV, capture_output=True, text=True,
                           timeout=30)
        out = p.stdout
        if "readyz" in cmd:
            ok = p.returncode == 0 and '"status":"ready"' in out
        else:
            ok = p.returncode == 0 and " 301" in out.splitlines()[0] and f"https://localhost:{https_port}/" in out
        check(f"README, as written: `{cmd}`", ok, (out + p.stderr).strip()[-300:])


def run_down(live):
    cmd = next(c for c in commands("day2") if c.split()[-1] == "down")
    p = run_day2(cmd, timeout=240)
    left = live.containers()
    log(f"day-2: `{cmd}` -> {p.returncode}")
    check(f"day-2, as written, nothing exported: `{cmd}` stops and removes every container", p.returncode == 0
          and not left, (p.stdout + p.stderr).strip()[-300:] + f" left: {len(left)}")
