"""Replacing the edge itself under load: `scripts/deploy.sh edge VERSION` starts a new edge container in the
edge-ports container's network namespace beside the old one (both nginx listen with reuseport), then stops the
old one. Run twice inside the deploy test's load (deploy.py): to N+1's image with a changed nginx config
(EDGE_CONF), then back to N with nginx/edge.conf. The gap is what the load saw during each switch."""

import os
import tempfile
import time

from harness import REPO, check, inspect, log, request, run

DEPLOY = os.path.join(REPO, "scripts", "deploy.sh")
MARK = "X-Edge-Config"


def changed_conf(directory):
    """nginx/edge.conf plus one header on every HTTPS answer: a config change the client can see."""
    with open(os.path.join(REPO, "nginx", "edge.conf")) as f:
        text = f.read()
    anchor = "        add_header Retry-After $own_retry_after always;\n"
    if anchor not in text:
        raise RuntimeError(f"nginx/edge.conf has no line {anchor.strip()!r} to add a header after")
    path = os.path.join(directory, "edge.conf")
    with open(path, "w") as f:
        f.write(text.replace(anchor, anchor + f"        add_header {MARK} changed always;\n", 1))
    os.chmod(path, 0o644)
    os.chmod(directory, 0o755)
    return path


def edges(live):
    """{container id: image tag} of the running edge containers."""
    return {c: inspect(c)["Config"]["Image"].rsplit(":", 1)[-1] for c in live.containers("edge", all_=False)}


def replace(live, load, tag, conf, label):
    env = dict(live.env)
    env.update({"COMPOSE_PROJECT_NAME": live.project, "LIVE_FILE": live.file})
    env.pop("APP_VERSION", None)  # the script takes it from the running app
    # Always given: deploy.sh records EDGE_CONF in compose/.env, so an unset one would mean the last one recorded.
    env["EDGE_CONF"] = conf or os.path.join(REPO, "nginx", "edge.conf")
    holder = live.containers("edge-ports", all_=False)
    before = edges(live)
    t = time.monotonic()
    with load.switch(label):
        p = run(["bash", DEPLOY, "edge", tag], timeout=300, env=env)
    took = time.monotonic() - t
    after = edges(live)
    n, failed, slowest = load.window(label)
    log(f"FIGURE edge replaced ({label}): {took:.1f} s, {n} requests meanwhile, {failed} failed, slowest "
        f"{slowest:.0f} ms; edge {sorted(before.values())} -> {sorted(after.values())}")
    check(f"edge: {label} with scripts/deploy.sh edge: one edge left, on {tag}, a new container, the ports' holder "
          "untouched",
          p.returncode == 0 and list(after.values()) == [tag] and not set(after) & set(before)
          and live.containers("edge-ports", all_=False) == holder,
          f"exit {p.returncode}: {p.stderr.strip()[-400:]}; before {before}, after {after}")
    check(f"edge: {label}: 0 failed requests while the edge was replaced", n > 0 and failed == 0,
          f"{n} requests, {failed} failed")
    return took


def replace_twice(live, load, port, tag_next, tag):
    """N+1 with a changed config, then N with the repository's: (list of switch descriptions)."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = changed_conf(tmp)
        took = replace(live, load, tag_next, conf, "edge to N+1, changed config")
        r = request(port, "GET", "/healthz")
        check("edge: the new edge serves with the changed config (its header on the answer)",
              r.headers.get(MARK.lower()) == "changed", repr(r))
        took_back = replace(live, load, tag, None, "edge back to N")
    r = request(port, "GET", "/healthz")
    check("edge: back on nginx/edge.conf (no extra header)", r.status == 200 and MARK.lower() not in r.headers, repr(r))
    return [f"edge to N+1 {took:.1f} s", f"edge back {took_back:.1f} s"]
