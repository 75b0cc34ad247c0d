"""compose/stack.yml on a single-node Docker Swarm that this phase starts (and leaves again): deploy, update to
N+1 and roll back under load, an automatic rollback of an unhealthy release, a killed worker replaced by Swarm."""

import json
import os
import socket
import time

from deploy import check_nothing_lost, wait_for_load
from load import KeepAliveLoad
from harness import (
    ENV,
    LIVE_PROJECT,
    LOG_DIR,
    REPO,
    SECRETS_DIR,
    TAG,
    TAG_NEXT,
    TLS_PORTS,
    check,
    get_task,
    live_env_file,
    log,
    post_task,
    run,
    wait_http,
    wait_serving,
    wait_tasks_done,
)

STACK_FILE = os.path.join(REPO, "compose", "stack.yml")
MARK = os.path.join(LOG_DIR, "swarm-initialised")  # tells run.sh to clean up if this phase is stopped midway
STACK = LIVE_PROJECT + "sw"
APP_IMAGE = "docker-sample/app"
HTTPD_IMAGE = "docker-sample/httpd"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def service(name):
    return f"{STACK}_{name}"


def service_tasks(name):
    """The running tasks of a service: [(container id, image tag)]."""
    p = run(["docker", "service", "ps", service(name), "--filter", "desired-state=running", "--no-trunc",
             "--format", "{{json .}}"])
    out = []
    for line in p.stdout.splitlines():
        t = json.loads(line)
        if t.get("CurrentState", "").startswith("Running"):
            out.append(t["Image"].split("@")[0].rsplit(":", 1)[-1])
    return out


def converged(names, timeout):
    """Waits until every named service runs its desired replicas; returns {name: 'running/desired'}."""
    deadline = time.monotonic() + timeout
    while True:
        p = run(["docker", "service", "ls", "--filter", f"label=com.docker.stack.namespace={STACK}",
                 "--format", "{{.Name}} {{.Replicas}}"])
        state = dict(line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)
        state = {k[len(STACK) + 1:]: v.split(" ")[0] for k, v in state.items()}
        done = all(n in state and state[n].split("/")[0] == state[n].split("/")[1] for n in names)
        if done or time.monotonic() > deadline:
            return state
        time.sleep(1)


def update(name, *args):
    t = time.monotonic()
    p = run(["docker", "service", *args, "--detach=false", service(name)], timeout=600)
    return p, time.monotonic() - t


def update_state(name):
    p = run(["docker", "service", "inspect", service(name), "--format", "{{json .UpdateStatus}}"])
    try:
        return (json.loads(p.stdout) or {}).get("State")
    except ValueError:
        return None


def unhealthy_image():
    """TAG-unhealthy: the app image listening on 127.0.0.2 only, so its healthcheck (127.0.0.1) fails."""
    ref = f"{APP_IMAGE}:{TAG}-unhealthy"
    cid = run(["docker", "create", f"{APP_IMAGE}:{TAG}"], check_rc=True).stdout.strip()
    try:
        run(["docker", "commit", "--change", "ENV LISTEN_ADDR=127.0.0.2:8000", cid, ref], check_rc=True)
    finally:
        run(["docker", "rm", cid])
    return ref


def rolling_updates(port, old_task):
    switches = []
    with KeepAliveLoad(port, old_task) as load:
        wait_for_load(load)
        for label, verb, tag in (("update to N+1", "update", TAG_NEXT), ("roll back to N", "rollback", TAG)):
            bad = []
            for name, image in (("app", APP_IMAGE), ("tasks", APP_IMAGE), ("httpd", HTTPD_IMAGE)):
                args = ["update", "--image", f"{image}:{tag}"] if verb == "update" else ["rollback"]
                with load.switch(f"{label} {name}"):
                    p, took = update(name, *args)
                tags = service_tasks(name)
                if p.returncode != 0 or not tags or set(tags) != {tag}:
                    bad.append(f"{name}: rc {p.returncode}, running {tags}: {p.stderr.strip()[-300:]}")
                switches.append(f"{label} {name} {took:.1f} s")
            check(f"swarm: {label} of app, tasks and httpd (service {verb}), every replica on {tag}", not bad,
                  "; ".join(bad) or ", ".join(switches[-3:]))
        time.sleep(1)
    check_nothing_lost("swarm", "swarm update and rollback under load", load, port, switches)


def automatic_rollback(port):
    ref = unhealthy_image()
    with KeepAliveLoad(port, None) as load:
        p, took = update("app", "update", "--image", ref)
        # `service update` returns once Swarm has started the rollback; it completes after its own monitor time.
        deadline = time.monotonic() + 120
        state = update_state("app")
        while state == "rollback_started" and time.monotonic() < deadline:
            time.sleep(1)
            state = update_state("app")
    tags = service_tasks("app")
    total, failed, _ = load.counts()
    log(f"FIGURE swarm unhealthy release: update ended after {took:.1f} s in state {state}; running {tags}; "
        f"{total} requests meanwhile, {len(failed)} failed")
    check("swarm: an update to an image whose healthcheck fails rolls back by itself",
          state == "rollback_completed" and tags and set(tags) == {TAG}, f"state {state}, running {tags}")
    check("swarm: no request failed while the unhealthy replica came and went", not failed and total > 0,
          f"{total} requests, failed {failed[:10]}")
    run(["docker", "image", "rm", ref])


def killed_worker(port):
    r = post_task(port, "sleep", {"ms": 4000})
    tid = (r.json() or {}).get("id")
    if not check("swarm: a sleep task is accepted", r.status == 202 and tid, repr(r)):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (get_task(port, tid).json() or {}).get("state") != "running":
        time.sleep(0.2)
    ids = run(["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service('tasks')}"]).stdout.split()
    victim = None
    for cid in ids:
        logs = run(["docker", "logs", cid])
        if tid in logs.stdout + logs.stderr:
            victim = cid
    if not check("swarm: the replica running the task is found in its log", victim is not None, f"{len(ids)} replicas"):
        return
    t = time.monotonic()
    run(["docker", "kill", victim], check_rc=True)
    res = wait_tasks_done(port, [tid], timeout=120)[tid] or {}
    state = converged(["tasks"], 60)
    log(f"FIGURE swarm killed worker: task {res.get('state')} {time.monotonic() - t:.1f} s after `docker kill` "
        f"(attempts {res.get('attempts')}); tasks replicas {state.get('tasks')}")
    check("swarm: the killed worker's task finishes (lost 0) and Swarm replaces the replica",
          res.get("state") == "done" and state.get("tasks") == "2/2", f"task {res.get('state')}, tasks {state.get('tasks')}")


def phase_swarm():
    state = run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()
    if not check("swarm: this engine is in no swarm yet (the phase starts its own)", state == "inactive",
                 f"LocalNodeState={state}; leave it first (`docker swarm leave`) or skip the phase"):
        return
    p = run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
    if not check("swarm: `docker swarm init` on 127.0.0.1", p.returncode == 0, p.stderr.strip()[-300:]):
        return
    with open(MARK, "w") as f:
        f.write(STACK)
    port = free_port()
    try:
        node = run(["docker", "info", "--format", "{{.Swarm.NodeID}}"]).stdout.strip()
        run(["docker", "node", "update", "--label-add", "docker-sample.data=true", node], check_rc=True)
        env = dict(ENV, APP_VERSION=TAG, REGISTRY="docker-sample", SECRETS_DIR=SECRETS_DIR,
                   EDGE_HTTPS_PORT=str(port), EDGE_PORT=str(free_port()), EDGE_PUBLISH_MODE="host",
                   LIVE_ENV_FILE=live_env_file(), RATE_LIMIT_TASKS="2000r/s", RATE_LIMIT_BURST="2000")
        TLS_PORTS.add(port)  # HTTPS, with the README's certificate as in the Compose stack
        t = time.monotonic()
        p = run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", STACK_FILE, STACK], env=env,
                timeout=300)
        if not check("swarm: `docker stack deploy` of compose/stack.yml", p.returncode == 0, p.stderr.strip()[-800:]):
            return
        ignored = [line for line in (p.stdout + p.stderr).splitlines() if "gnoring" in line]
        log(f"swarm: stack deploy output about unsupported options: {ignored or 'none'}")
        ready = wait_http(port, "/readyz", 200, timeout=240)
        state = converged(["app", "tasks", "httpd", "edge", "db", "redis", "backup"], 180)
        check("swarm: the stack serves through the edge (mode: host) with every replica running",
              ready is not None and all(v.split("/")[0] == v.split("/")[1] for v in state.values()),
              f"/readyz after {time.monotonic() - t:.1f} s; replicas {state}")
        if ready is None:
            return
        # One 200 can come through the httpd replica that already resolved the app replicas; the other finds them
        # at its next DNS lookup (2 s). Under load from the first moment, wait until every path answers.
        check("swarm: every httpd replica serves (10 answers in a row) before the load starts", wait_serving(port))
        r = post_task(port, "wordcount", {"text": "swarm task before the update"})
        old_task = (r.json() or {}).get("id")
        for name, fn in (("rolling updates", lambda: rolling_updates(port, old_task)),
                         ("automatic rollback", lambda: automatic_rollback(port)),
                         ("killed worker", lambda: killed_worker(port))):
            log(f"swarm: {name}")
            try:
                fn()
            except Exception as e:
                check(f"swarm: {name} ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        run(["docker", "stack", "rm", STACK], timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run(["docker", "ps", "-aq", "--filter",
                                                   f"label=com.docker.stack.namespace={STACK}"]).stdout.strip():
            time.sleep(1)
        for _ in range(3):  # the first leave right after a stack removal can time out
            p = run(["docker", "swarm", "leave", "--force"], timeout=150)
            if p.returncode == 0:
                os.remove(MARK)
                break
        vols = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"]).stdout.split()
        if vols:
            run(["docker", "volume", "rm", "-f", *vols])
        check("swarm: stack removed and the swarm left again", p.returncode == 0, p.stderr.strip()[-300:])
