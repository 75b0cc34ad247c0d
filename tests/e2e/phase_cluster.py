"""compose/stack.yml on a Swarm of three Docker engines on this one machine (tests/e2e/cluster.py: a network
namespace, a dockerd and an address each, a bridge between them, Debian's docker-registry on it), the images pushed
to the registry as `nix run .#push` lays them out and pulled by every node. Under constant load from keep-alive
clients entering through the nodes' published ports (a load balancer in front of them: harness.TARGETS): a rolling
update to N+1 and `docker service rollback`, an unhealthy release Swarm rolls back by itself, a killed worker, a
drained node, the PostgreSQL password rotated, the whole stack deployed and rolled back, and a node lost. Each
prints a FIGURE line."""

import json
import os
import shutil
import threading
import time
import urllib.request

import cluster as cl
from deploy import wait_for_load
from harness import (
    ENV,
    LIVE_PROJECT,
    LOG_DIR,
    SECRETS_DIR,
    TAG,
    TAG_NEXT,
    TARGETS,
    TLS_PORTS,
    check,
    get_task,
    live_env_file,
    log,
    post_task,
    run,
    wait_serving,
    wait_tasks_done,
)
from health_checks import INTERVAL, HealthChecks
from load import KeepAliveLoad, finished
from readme_blocks import commands

STACK = LIVE_PROJECT + "cl"
PORT = 18443       # the edge's HTTPS port on every node (inside the namespaces: nothing else there holds it)
HTTP_PORT = 18001
RATE = 250         # requests/s of the load in every scenario (the check asks for at least 200)
MIN_RATE = 200
APPS = ("app", "tasks", "httpd")
ALL = ("app", "tasks", "httpd", "edge", "db", "redis", "backup")
REPLICAS = {"app": 2, "tasks": 2, "httpd": 3, "edge": 2}  # httpd: one per node (HTTPD_REPLICAS, compose/stack.yml)
IMAGES = {"app": "docker-sample/app", "tasks": "docker-sample/app", "httpd": "docker-sample/httpd",
          "edge": "docker-sample/httpd"}


def svc(name):
    return f"{STACK}_{name}"


def tag_of(image):
    return image.split("@")[0].rsplit(":", 1)[-1]


class Ctx:
    """The cluster, the manager the CLI talks to (node 1, never the one lost), and the settings scripts/swarm.sh
    runs with."""

    def __init__(self, c):
        self.c = c
        self.mgr = c.nodes[0]
        self.env = self.mgr.env(ENV)
        self.prefix = f"{c.registry}/e2e"  # what `nix run .#push -- REGISTRY VERSION` is given
        self.script_env = None

    def docker(self, *args, timeout=120, check_rc=False):
        return run(["docker", *args], timeout=timeout, env=self.env, check_rc=check_rc)

    def node_name(self, node_id):
        return next((n.name for n in self.c.nodes if n.node_id == node_id), node_id[:8])

    def tasks(self, name):
        """The tasks of a service meant to run: [{node, state, tag, container}]."""
        ids = self.docker("service", "ps", "-q", "--filter", "desired-state=running", svc(name)).stdout.split()
        if not ids:
            return []
        out = []
        for t in json.loads(self.docker("inspect", "--type", "task", *ids).stdout or "[]"):
            out.append({"node": self.node_name(t.get("NodeID", "")), "state": t["Status"]["State"],
                        "tag": tag_of(t["Spec"]["ContainerSpec"]["Image"]),
                        "container": (t["Status"].get("ContainerStatus") or {}).get("ContainerID")})
        return out

    def running(self, name):
        return [t for t in self.tasks(name) if t["state"] == "running"]

    def replicas(self):
        """{service: 'running/desired'}: the tasks meant to run that run, on a node that is not down, counted from the
        task list (`docker service ls` counts from a summary that lags behind a drain by a few seconds)."""
        p = self.docker("service", "ls", "--filter", f"label=com.docker.stack.namespace={STACK}",
                        "--format", "{{.Name}} {{.Replicas}}")
        want = {k[len(STACK) + 1:]: v.split(" ")[0].split("/")[-1] for k, v in
                (line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)}
        down = {n.name for n in self.c.nodes if n.node_id and self.docker(
            "node", "inspect", n.node_id, "--format", "{{.Status.State}}", timeout=30).stdout.strip() == "down"}
        have = {name: 0 for name in want}
        for line in self.docker("stack", "ps", "--filter", "desired-state=running", "--format",
                                "{{.Name}} {{.Node}} {{.CurrentState}}", STACK).stdout.splitlines():
            task, node, state = (line.split(" ", 2) + ["", ""])[:3]
            name = task.rsplit(".", 1)[0][len(STACK) + 1:]
            if name in have and state.startswith("Running") and node.rsplit("-", 1)[-1] not in down:
                have[name] += 1
        return {name: f"{have[name]}/{want[name]}" for name in want}

    def converged(self, names=ALL, timeout=180):
        deadline = time.monotonic() + timeout
        while True:
            state = self.replicas()
            done = all(n in state and state[n].split("/")[0] == state[n].split("/")[1] for n in names)
            if done or time.monotonic() > deadline:
                return done, state
            time.sleep(1)

    def swarm_script(self, command, timeout=600):
        """A scripts/swarm.sh line of the README's "Past one machine" block, run as written from the repository
        root (the version of a `deploy` line replaced by the one asked for)."""
        t = time.monotonic()
        p = run(["bash", "-c", command], timeout=timeout, env=self.script_env)
        return p, time.monotonic() - t


def readme_line(start):
    return next(c for c in commands("swarm") if c.startswith(start))


# ---- set-up: the swarm, the registry, the stack ---------------------------------------------------------------------
def build_swarm(ctx):
    ctx.c.swarm(managers=3)
    nodes = [json.loads(line) for line in ctx.docker("node", "ls", "--format", "{{json .}}").stdout.splitlines()]
    ready = [n for n in nodes if n.get("Status") == "Ready" and n.get("Availability") == "Active"]
    managers = [n for n in nodes if n.get("ManagerStatus") in ("Leader", "Reachable")]
    check("cluster: one swarm of three nodes, all three managers (any one may be lost), Ready and Active",
          len(ready) == 3 and len(managers) == 3, f"{nodes}")
    ctx.docker("node", "update", "--label-add", "docker-sample.data=true", ctx.mgr.node_id, check_rc=True)


def push_images(ctx):
    """N and N+1 as a release is pushed (REGISTRY/docker-sample/app:VERSION-amd64 and the index VERSION), and the
    PostgreSQL and Redis stand-ins (production pulls the official images)."""
    t = time.monotonic()
    local = {"docker-sample/app": "docker-sample/app", "docker-sample/httpd": "docker-sample/httpd"}
    for tag in (TAG, TAG_NEXT):
        cl.push_release(ctx.prefix, tag, {name: f"{ref}:{tag}" for name, ref in local.items()}, log=log)
    pg = cl.push_plain(ctx.prefix, ENV["POSTGRES_IMAGE"], "docker-sample-test/postgres:15")
    rd = cl.push_plain(ctx.prefix, ENV["REDIS_IMAGE"], "docker-sample-test/redis:7")
    with urllib.request.urlopen(f"http://{ctx.c.registry}/v2/_catalog", timeout=30) as r:
        catalog = json.loads(r.read())
    want = {f"e2e/{n}" for n in ("docker-sample/app", "docker-sample/httpd", "docker-sample-test/postgres",
                                 "docker-sample-test/redis")}
    check("cluster: N and N+1 pushed to the registry as `nix run .#push` does (VERSION-<arch> tags and an OCI "
          "index VERSION), PostgreSQL and Redis beside them", want <= set(catalog.get("repositories", [])),
          f"{time.monotonic() - t:.1f} s; catalog {catalog}")
    return pg, rd


def images_from_registry(ctx):
    """Every image on every live node came from the registry (a name under it and its digest), none by docker load."""
    bad = []
    for n in ctx.c.nodes:
        ids = n.docker("image", "ls", "-q", env=ENV).stdout.split()
        if not ids:
            bad.append(f"{n.name}: no image at all")
            continue
        p = n.docker("image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", *ids, env=ENV)
        for line in p.stdout.splitlines():
            image, digests = line.split(" ", 1)
            if not any(d.startswith(ctx.c.registry + "/") for d in json.loads(digests) or []):
                bad.append(f"{n.name}: {image[:19]} {digests}")
    return bad


def deploy_stack(ctx, pg, rd):
    secrets = os.path.join(os.path.dirname(LOG_DIR), "cluster-secrets")
    shutil.copytree(SECRETS_DIR, secrets)  # the rotation replaces postgres_password here, not in the other phases'
    ctx.script_env = dict(ctx.env, STACK_NAME=STACK, REGISTRY=f"{ctx.prefix}/docker-sample", POSTGRES_IMAGE=pg,
                          REDIS_IMAGE=rd, SECRETS_DIR=secrets, LIVE_ENV_FILE=live_env_file(),
                          EDGE_HTTPS_PORT=str(PORT), EDGE_PORT=str(HTTP_PORT), EDGE_PUBLISH_MODE="host",
                          EDGE_REPLICAS="2", HTTPD_REPLICAS="3", RATE_LIMIT_TASKS="2000r/s", RATE_LIMIT_BURST="2000",
                          SWARM_ENV_FILE=os.path.join(os.path.dirname(LOG_DIR), "swarm.env"))
    line = readme_line("scripts/swarm.sh deploy ")
    p, took = ctx.swarm_script(line.replace(line.split()[-1], TAG))
    if not check(f"cluster: `{line}` (version N) deploys compose/stack.yml, every service running", p.returncode == 0,
                 f"{took:.1f} s; {p.stderr.strip()[-800:]}"):
        return False
    TLS_PORTS.add(PORT)
    TARGETS[PORT] = [n.addr for n in ctx.c.nodes]
    check("cluster: every httpd replica serves through the edges (10 answers in a row)", wait_serving(PORT))
    # Swarm's scheduler spreads the replicas of a service over the nodes with the fewest of its tasks, then the
    # fewest tasks at all: no placement preference is needed for this.
    spread = {name: sorted(t["node"] for t in ctx.running(name)) for name in ALL}
    used = {n for nodes in spread.values() for n in nodes}
    ok = (all(len(set(spread[name])) == len(spread[name]) == n for name, n in REPLICAS.items())
          and all(spread[name] == ["n1"] for name in ("db", "redis", "backup")) and len(used) == 3)
    check("cluster: replicas spread (app, tasks and edge on two nodes each, httpd on all three), db, redis and "
          "backup on the labelled node", ok, f"{spread}")
    bad = images_from_registry(ctx)
    check("cluster: every image on every node was pulled from the registry (none loaded)", not bad, f"{bad[:6]}")
    return True


# ---- what every scenario checks --------------------------------------------------------------------------------------
def check_load(label, load, notes, lost_node=None):
    """The FIGURE line of one scenario, then: the rate, requests entering through two nodes or more, 0 failed
    requests (a node lost: 0 failed GETs, each failed POST listed with why), no other non-2xx, every accepted task
    finished once (a node lost: a task run again only when its first attempt was on that node, in that node's
    worker log)."""
    total, failed, other = load.counts()
    f = load.figures()
    results = finished(PORT, load.accepted, timeout=180)
    lost = [t for t, v in results.items() if not v or v.get("state") != "done"]
    twice = [t for t, v in results.items() if v and v.get("attempts") != 1]
    explained = []
    if lost_node is not None and twice:
        text = lost_node_logs(lost_node)
        explained = [t for t in twice if t in text]
    entered = ", ".join(f"{a} {n}" for a, n in sorted(f["entered"].items()))
    failed_gets = [x for x in failed if not x.startswith("post")]
    log(f"FIGURE cluster {label}: {f['rate']:.0f} requests/s from {f['clients']} keep-alive clients, {total} "
        f"requests, {len(failed)} failed ({len(failed_gets)} GETs), {len(other)} other non-2xx; entered through "
        f"{entered}; {len(f['sent_again'])} sent to another node after theirs gave no answer, {f['resent']} sent "
        f"again after a closed keep-alive connection; p99 {f['p99_before_ms']:.0f} ms before, "
        f"{f['p99_during_ms']:.0f} ms during ({f['during']} requests); tasks accepted {len(load.accepted)}, lost "
        f"{len(lost)}, run twice {len(twice)}" + (f" ({len(explained)} begun on the lost node)" if lost_node else "")
        + (f"; {'; '.join(notes)}" if notes else ""))
    for line in load.failures[:10]:
        log(f"cluster {label}: failed request at {line}")
    for line in f["sent_again"][:10]:
        log(f"cluster {label}: sent to another node: {line}")
    check(f"cluster {label}: the load reached {MIN_RATE} requests/s from 16 clients", f["rate"] >= MIN_RATE and
          f["clients"] >= 16, f"{f['rate']:.0f} requests/s")
    check(f"cluster {label}: requests entered through the published port of two nodes or more",
          len([n for n in f["entered"].values() if n >= 100]) >= 2, entered)
    if lost_node is None:
        check(f"cluster {label}: 0 connection errors and 0 5xx", total > 100 and not failed,
              f"{total} requests, failed {failed[:10]}")
    else:
        check(f"cluster {label}: 0 failed GETs", total > 100 and not failed_gets, f"{total} requests, "
              f"failed {failed_gets[:10]}")
        log(f"cluster {label}: POSTs that failed: {len(failed) - len(failed_gets)}"
            + "".join(f"; {x}" for x in load.failures if "post" in x)[:1500])
    check(f"cluster {label}: no other non-2xx answer", not other, f"{other[:10]}")
    unexplained = [t for t in twice if t not in explained]
    check(f"cluster {label}: every accepted task finished, none lost" + (", none run twice" if lost_node is None else
          ", none run twice but those whose first attempt died with the node"), not lost and not unexplained,
          f"accepted {len(load.accepted)}, lost {len(lost)} {lost[:3]}, run twice {len(twice)} "
          f"(unexplained {unexplained[:3]})")


def lost_node_logs(node):
    """The container logs the lost node's engine wrote to its data root (it can no longer be asked for them)."""
    text = []
    base = os.path.join(node.data_root, "containers")
    for root, _, files in os.walk(base):
        for f in files:
            if f.endswith("-json.log"):
                try:
                    text.append(open(os.path.join(root, f), errors="replace").read())
                except OSError:
                    pass
    return "\n".join(text)


# ---- the scenarios ---------------------------------------------------------------------------------------------------
def rolling_updates(ctx, old_task):
    """app, tasks and httpd to N+1 with `docker service update --image`, then `docker service rollback`; the three
    services at once, each one replica at a time."""
    switches = []
    with KeepAliveLoad(PORT, old_task, rate=RATE) as load:
        wait_for_load(load)
        for label, verb, tag in (("update to N+1", "update", TAG_NEXT), ("roll back to N", "rollback", TAG)):
            results = {}

            def one(name):
                args = ["update", "--image", f"{ctx.prefix}/{IMAGES[name]}:{tag}"] if verb == "update" else ["rollback"]
                t = time.monotonic()
                p = ctx.docker("service", *args, "--detach=false", svc(name), timeout=600)
                results[name] = (p, time.monotonic() - t)

            with load.switch(label):
                threads = [threading.Thread(target=one, args=(name,)) for name in APPS]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
            bad = []
            for name in APPS:
                p, took = results[name]
                tags = [t["tag"] for t in ctx.running(name)]
                if p.returncode != 0 or len(tags) != REPLICAS[name] or set(tags) != {tag}:
                    bad.append(f"{name}: rc {p.returncode}, running {tags}: {p.stderr.strip()[-300:]}")
                switches.append(f"{label} {name} {took:.1f} s")
            check(f"cluster: {label} of app, tasks and httpd (docker service {verb}), every replica on {tag}",
                  not bad, "; ".join(bad) or ", ".join(switches[-3:]))
        time.sleep(1)  # the load keeps running one more second on the final version
    check_load("service update and rollback", load, switches)


def automatic_rollback(ctx):
    """An app image whose healthcheck fails (it listens on 127.0.0.2 only), pushed like a release: Swarm rolls the
    update back by itself."""
    local = f"docker-sample/app:{TAG}-unhealthy"
    cid = run(["docker", "create", f"docker-sample/app:{TAG}"], check_rc=True).stdout.strip()
    try:
        run(["docker", "commit", "--change", "ENV LISTEN_ADDR=127.0.0.2:8000", cid, local], check_rc=True)
    finally:
        run(["docker", "rm", cid])
    ref = cl.push_plain(ctx.prefix, local, f"docker-sample/app:{TAG}-unhealthy")
    run(["docker", "image", "rm", local])
    with KeepAliveLoad(PORT, None, rate=RATE) as load:
        t = time.monotonic()
        ctx.docker("service", "update", "--image", ref, "--detach=false", svc("app"), timeout=600)
        took = time.monotonic() - t
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            p = ctx.docker("service", "inspect", svc("app"), "--format", "{{json .UpdateStatus}}")
            state = (json.loads(p.stdout or "null") or {}).get("State")
            if state != "rollback_started":
                break
            time.sleep(1)
    tags = [t["tag"] for t in ctx.running("app")]
    total, failed, _ = load.counts()
    log(f"FIGURE cluster unhealthy release: update ended after {took:.1f} s in state {state}; running {tags}; "
        f"{total} requests meanwhile, {len(failed)} failed")
    check("cluster: an update to an image whose healthcheck fails rolls back by itself",
          state == "rollback_completed" and tags and set(tags) == {TAG}, f"state {state}, running {tags}")
    check("cluster: no request failed while the unhealthy replica came and went", not failed and total > 0,
          f"{total} requests, failed {failed[:10]}")


def killed_worker(ctx):
    r = post_task(PORT, "sleep", {"ms": 4000})
    tid = (r.json() or {}).get("id")
    if not check("cluster: a sleep task is accepted", r.status == 202 and tid, repr(r)):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (get_task(PORT, tid).json() or {}).get("state") != "running":
        time.sleep(0.2)
    victim = None
    for t in ctx.running("tasks"):
        node = next(n for n in ctx.c.nodes if n.name == t["node"])
        logs = node.docker("logs", t["container"], env=ENV)
        if tid in logs.stdout + logs.stderr:
            victim = (node, t["container"])
    if not check("cluster: the worker running the task is found in its log", victim is not None):
        return
    t0 = time.monotonic()
    victim[0].docker("kill", victim[1], env=ENV)
    res = wait_tasks_done(PORT, [tid], timeout=120)[tid] or {}
    ok, state = ctx.converged(["tasks"], 60)
    log(f"FIGURE cluster killed worker: task {res.get('state')} {time.monotonic() - t0:.1f} s after `docker kill` on "
        f"{victim[0].name} (attempts {res.get('attempts')}); tasks replicas {state.get('tasks')}")
    check("cluster: the killed worker's task finishes (lost 0) and Swarm replaces the replica",
          res.get("state") == "done" and ok, f"task {res.get('state')}, tasks {state.get('tasks')}")


def busiest_worker_node(ctx):
    """The node other than the labelled one with the most app, tasks, httpd and edge replicas (a worker on it first)."""
    count = {}
    for name in ("tasks", "app", "httpd", "edge"):
        for t in ctx.running(name):
            if t["node"] != "n1":
                count[t["node"]] = count.get(t["node"], 0) + (100 if name == "tasks" else 1)
    name = max(count, key=count.get) if count else "n2"
    return next(n for n in ctx.c.nodes if n.name == name)


def drained_node(ctx):
    node = busiest_worker_node(ctx)
    before = {name: [t["node"] for t in ctx.running(name)] for name in ("app", "tasks", "httpd", "edge")}
    with KeepAliveLoad(PORT, None, rate=RATE) as load:
        wait_for_load(load)
        t = time.monotonic()
        left, done, state = ALL, False, {}
        with load.switch("drain"):
            ctx.docker("node", "update", "--availability", "drain", node.node_id, check_rc=True)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                left = [name for name in ALL if any(x["node"] == node.name for x in ctx.tasks(name))]
                done, state = ctx.converged(ALL, 0)
                if not left and done:
                    break
                time.sleep(1)
        took = time.monotonic() - t
        load.stop.wait(5)  # and on, with the node drained
    after = {name: [t["node"] for t in ctx.running(name)] for name in ("app", "tasks", "httpd", "edge")}
    check(f"cluster: `docker node update --availability drain` of {node.name}: its replicas run elsewhere",
          not left and done, f"{took:.1f} s; before {before}, after {after}, still there {left}, replicas {state}")
    check_load(f"drain {node.name}", load, [f"drain {took:.1f} s: {before} -> {after}"])
    ctx.docker("node", "update", "--availability", "active", node.node_id, check_rc=True)


def rotation(ctx):
    line = readme_line("scripts/swarm.sh rotate-db-password")
    old = {name: secret_of(ctx, name) for name in ("app", "tasks", "backup", "db")}
    with KeepAliveLoad(PORT, None, rate=RATE) as load:
        wait_for_load(load)
        with load.switch("rotation"):
            p, took = ctx.swarm_script(line)
        time.sleep(1)
    new = {name: secret_of(ctx, name) for name in ("app", "tasks", "backup", "db")}
    previous = {name: secret_of(ctx, name, "postgres_password_previous") for name in ("app", "tasks", "backup")}
    moved = all(new[n] != old[n] and new[n].startswith(f"{STACK}_postgres_password_") and previous[n] == old[n]
                for n in ("app", "tasks", "backup"))
    check(f"cluster: `{line}`: a new secret name for app, tasks and backup, the old one as their previous "
          "(db keeps its own until the next deploy)",
          p.returncode == 0 and moved and new["db"] == old["db"],
          f"{took:.1f} s; before {old}, after {new}, previous {previous}: {p.stderr.strip()[-600:]}")
    ready = wait_serving(PORT, timeout=30)
    check("cluster: the app replicas started with the new password serve the database routes", ready)
    check_load("PostgreSQL password rotation", load, [f"`{line}` {took:.1f} s"])


def secret_of(ctx, name, target="postgres_password"):
    p = ctx.docker("service", "inspect", svc(name), "--format",
                   '{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{if eq .File.Name "%s"}}'
                   '{{.SecretName}}{{end}}{{end}}' % target)
    return p.stdout.strip()


def whole_stack(ctx):
    deploy_line = readme_line("scripts/swarm.sh deploy ")
    deploy_line = deploy_line.replace(deploy_line.split()[-1], TAG_NEXT)
    rollback_line = readme_line("scripts/swarm.sh rollback")
    switches = []
    with KeepAliveLoad(PORT, None, rate=RATE) as load:
        wait_for_load(load)
        with load.switch("stack deploy N+1"):
            p, took = ctx.swarm_script(deploy_line)
        switches.append(f"deploy N+1 {took:.1f} s")
        tags = {name: sorted({t["tag"] for t in ctx.running(name)}) for name in IMAGES}
        check(f"cluster: `{deploy_line.replace(TAG_NEXT, 'N+1')}`: every service on N+1",
              p.returncode == 0 and all(v == [TAG_NEXT] for v in tags.values()),
              f"{took:.1f} s; {tags}: {p.stderr.strip()[-600:]}")
        with load.switch("stack rollback"):
            p, took = ctx.swarm_script(rollback_line)
        switches.append(f"rollback {took:.1f} s")
        tags = {name: sorted({t["tag"] for t in ctx.running(name)}) for name in IMAGES}
        check(f"cluster: `{rollback_line}` puts every service back on version N within 60 s",
              p.returncode == 0 and all(v == [TAG] for v in tags.values()) and took <= 60,
              f"{took:.1f} s; {tags}: {p.stderr.strip()[-600:]}")
        log(f"FIGURE cluster whole-stack rollback: every service back on N {took:.1f} s after `{rollback_line}`")
        time.sleep(1)
    check_load("stack deploy N+1 and stack rollback", load, switches)


def lost_node(ctx):
    save_service_logs(ctx)  # while every node can still be asked
    node = busiest_worker_node(ctx)
    before = {name: [t["node"] for t in ctx.running(name)] for name in ("app", "tasks", "httpd", "edge")}
    with KeepAliveLoad(PORT, None, rate=RATE) as load:
        wait_for_load(load)
        with load.switch("node lost"):
            t = time.monotonic()
            procs = ctx.c.kill_node(node)
            down_after = None
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                p = ctx.docker("node", "inspect", node.node_id, "--format", "{{.Status.State}}", timeout=30)
                if p.stdout.strip() == "down":
                    down_after = time.monotonic() - t
                    break
                time.sleep(0.5)
            done, state = ctx.converged(ALL, 180)
            back_after = time.monotonic() - t
        # The load goes on through what is left for as long again: the replacements serving it.
        load.stop.wait(max(10.0, back_after))
    after = {name: [t["node"] for t in ctx.running(name)] for name in ("app", "tasks", "httpd", "edge")}
    on_dead = [name for name, nodes in after.items() if node.name in nodes]
    log(f"FIGURE cluster node lost: {node.name} cut off and its {procs} processes (dockerd, containerd, shims, "
        f"containers) killed with SIGKILL; Down after {down_after if down_after is None else round(down_after, 1)} s; "
        f"every service back to its replica count after {back_after:.1f} s ({state}); before {before}, after {after}")
    check(f"cluster: {node.name} lost: Swarm marks it Down and runs its replicas on the other nodes",
          down_after is not None and done and not on_dead, f"replicas {state}, still on it: {on_dead}")
    down = "never" if down_after is None else f"after {down_after:.1f} s"
    check_load(f"node {node.name} lost", load, [f"Down {down}, every replica back after {back_after:.1f} s"],
               lost_node=node)


def save_service_logs(ctx):
    """app's and tasks' logs so far, for a failure's post-mortem: each node's containers of the two services, read from
    that node's engine (`docker service logs` waited past 30 s for tasks long gone). Before a node is lost; never a
    check: a log that cannot be read is said in one line."""
    for name in ("app", "tasks"):
        with open(os.path.join(LOG_DIR, f"cluster-{name}.log"), "w") as f:
            for n in ctx.c.nodes:
                try:
                    ids = n.docker("ps", "-a", "-q", "--filter",
                                   f"label=com.docker.swarm.service.name={svc(name)}", timeout=20).stdout.split()
                    for cid in ids:
                        p = n.docker("logs", "--timestamps", cid, timeout=20)
                        f.write(f"==== {n.name} {cid}\n{p.stdout}{p.stderr}")
                except Exception as e:
                    log(f"cluster: {name}'s logs on {n.name} were not read: {type(e).__name__}: {e}")


# ---- the phase -------------------------------------------------------------------------------------------------------
def phase_cluster():
    missing = cl.missing_tools()
    if not check("cluster: tools present (iproute2, nsenter, iptables, dockerd, docker-registry, skopeo)", not missing,
                 "missing: " + ", ".join(missing)):
        return
    if not check("cluster: a version N+1 to update to (E2E_TAG_NEXT)", bool(TAG_NEXT)):
        return
    t0 = time.monotonic()
    cl.sweep(log=log)
    try:
        c = cl.start(log=log)
    except Exception as e:
        check("cluster: three engines in network namespaces and a registry on a bridge", False,
              f"{type(e).__name__}: {e}")
        return
    ctx = Ctx(c)
    try:
        check("cluster: three engines in network namespaces and a registry on a bridge", True,
              f"{time.monotonic() - t0:.1f} s")
        build_swarm(ctx)
        pg, rd = push_images(ctx)
        if not deploy_stack(ctx, pg, rd):
            return
        r = post_task(PORT, "wordcount", {"text": "cluster task before the update"})
        old_task = (r.json() or {}).get("id")
        with HealthChecks(TARGETS[PORT], HTTP_PORT) as health:
            for name, fn in (("rolling updates", lambda: rolling_updates(ctx, old_task)),
                             ("automatic rollback", lambda: automatic_rollback(ctx)),
                             ("killed worker", lambda: killed_worker(ctx)),
                             ("whole stack", lambda: whole_stack(ctx)),
                             ("drained node", lambda: drained_node(ctx)),
                             ("rotation", lambda: rotation(ctx)),
                             ("lost node", lambda: lost_node(ctx))):
                log(f"cluster: {name}")
                try:
                    fn()
                except Exception as e:
                    check(f"cluster: {name} ran to the end", False, f"{type(e).__name__}: {e}")
        log(f"cluster: the balancer's health checks (/edge-health every {INTERVAL} s) that failed, per node: "
            f"{health.failed}")
    except Exception as e:
        check("cluster: phase ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        for n in c.nodes:  # the engines' logs
            if os.path.exists(n.log):
                shutil.copy(n.log, os.path.join(LOG_DIR, f"cluster-{n.name}-dockerd.log"))
        TARGETS.pop(PORT, None)
        t = time.monotonic()
        removed = c.remove()
        check("cluster: namespaces, bridge, FORWARD rule, engines and registry removed", removed,
              f"{time.monotonic() - t:.1f} s")
        log(f"FIGURE cluster phase: {time.monotonic() - t0:.0f} s from the first namespace to the last removal")
