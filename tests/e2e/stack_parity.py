"""compose/stack.yml (Swarm) and compose/live.yml (Compose) describe the same services: both files are read by
`docker compose config` and compared field by field. The differences Swarm forces are listed here, nowhere else."""

import json
import os

from harness import REPO, SECRETS_DIR, check, run

LIVE = os.path.join(REPO, "compose", "live.yml")
STACK = os.path.join(REPO, "compose", "stack.yml")

# Fields that must be equal in every service the two files share.
SAME = ["image", "user", "entrypoint", "command", "environment", "secrets", "configs", "read_only", "cap_drop",
        "stop_grace_period", "stop_signal", "healthcheck", "networks"]
# What differs, and why (the stack file's header says the same to its readers).
ONLY_LIVE_SERVICES = {"migrate",        # Swarm: MIGRATE_ON_START under sqlx's advisory lock instead
                      "edge-ports"}     # Swarm has no shared network namespace (network_mode: service:...); in
                                        # live.yml the edge's ports and networks are edge-ports'
ENV_DIFFERENCES = {"MIGRATE_ON_START",  # "false" in env/live.env (the migrate service runs), "true" in the stack
                   "DRAIN_SECONDS"}     # the stack's edge drains for the load balancer in front of the nodes; the
                                        # live edge is replaced on its shared socket (scripts/deploy.sh edge)


def config(path):
    env = dict(os.environ, APP_VERSION="0.0.0-parity", SECRETS_DIR=SECRETS_DIR)
    for name in ("APP_IMAGE", "HTTPD_IMAGE", "REGISTRY", "EDGE_VERSION", "EDGE_PORTS_VERSION"):
        env.pop(name, None)
    p = run(["docker", "compose", "-f", path, "config", "--format", "json"], env=env, check_rc=True)
    return json.loads(p.stdout)["services"]


def normalised(svc, field):
    v = svc.get(field)
    if field == "environment":
        return {k: x for k, x in (v or {}).items() if k not in ENV_DIFFERENCES}
    if field == "networks":
        return sorted(v or {})
    if field in ("secrets", "configs"):
        return sorted((s.get("source"), s.get("target")) for s in v or [])
    return v


def tmpfs_targets(svc):
    live_form = [t.split(":", 1)[0] for t in svc.get("tmpfs") or []]
    swarm_form = [m["target"] for m in svc.get("volumes") or [] if m.get("type") == "tmpfs"]
    return sorted(live_form + swarm_form)


def check_stack_parity():
    live, stack = config(LIVE), config(STACK)
    check("stack parity: the stack has every live service but migrate, and nothing else",
          set(stack) == set(live) - ONLY_LIVE_SERVICES, f"live {sorted(live)}, stack {sorted(stack)}")
    diffs = []
    for name in sorted(set(live) & set(stack)):
        a, b = live[name], stack[name]
        holder = (a.get("network_mode") or "").removeprefix("service:")
        if holder in live:  # the live edge's networks are those of the namespace it joins
            a = dict(a, networks=live[holder].get("networks"))
        for field in SAME:
            if normalised(a, field) != normalised(b, field):
                diffs.append(f"{name}.{field}: live {normalised(a, field)!r} != stack {normalised(b, field)!r}")
        if tmpfs_targets(a) != tmpfs_targets(b):
            diffs.append(f"{name}.tmpfs: live {tmpfs_targets(a)} != stack {tmpfs_targets(b)}")
        da, db = a.get("deploy") or {}, b.get("deploy") or {}
        if da.get("resources") != db.get("resources"):
            diffs.append(f"{name}.deploy.resources: live {da.get('resources')} != stack {db.get('resources')}")
        if (da.get("replicas") or 1) != (db.get("replicas") or 1):
            diffs.append(f"{name}.deploy.replicas: live {da.get('replicas')} != stack {db.get('replicas')}")
    check("stack parity: images, env, secrets, hardening, healthchecks, resources and replicas equal", not diffs,
          "; ".join(diffs[:8]) or f"{len(set(live) & set(stack))} services compared")
    problems = []
    for name, svc in stack.items():
        d = svc.get("deploy") or {}
        if not (d.get("resources") or {}).get("limits") or not (d.get("resources") or {}).get("reservations"):
            problems.append(f"{name}: limits and reservations")
        if name in ("app", "httpd", "tasks", "edge"):
            u, r = d.get("update_config") or {}, d.get("rollback_config") or {}
            if u.get("order") != "start-first" or u.get("failure_action") != "rollback" or not r:
                problems.append(f"{name}: update_config start-first + rollback, rollback_config")
        if name in ("app", "tasks") and (d.get("replicas") or 1) < 2:
            problems.append(f"{name}: at least 2 replicas")
        if name in ("db", "redis") and (d.get("replicas") != 1 or not (d.get("placement") or {}).get("constraints")):
            problems.append(f"{name}: one replica, placed by a node label")
        if name in ("app", "tasks") and (svc.get("environment") or {}).get("MIGRATE_ON_START") != "true":
            problems.append(f"{name}: MIGRATE_ON_START=true")
    check("stack: Swarm settings (resources, start-first updates with rollback, replicas, placement, migrations)",
          not problems, "; ".join(problems) or "every service")
    nets = run(["docker", "compose", "-f", STACK, "config", "--format", "json"],
               env=dict(os.environ, APP_VERSION="0.0.0-parity", SECRETS_DIR=SECRETS_DIR), check_rc=True)
    networks = json.loads(nets.stdout).get("networks") or {}
    check("stack: overlay networks, backend internal",
          all(n.get("driver") == "overlay" for n in networks.values()) and networks.get("backend", {}).get("internal"),
          f"{networks}")
