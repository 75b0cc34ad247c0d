"""The live stack: compose/live.yml through nginx, hardening, bad input, then the faults and the deploy."""

import json
import os
import socket
import time
import uuid

from day2 import check_recorded, day2_commands, first_deploy_curls, recorded_deployment, run_down
from deploy import deploy_and_rollback
from abuse_limits import queue_backlog, rate_limit
from edge_checks import domain_at_run_time, refused_certificate, tls_and_redirect
from observatory import check as observatory_check
from faults import (
    fault_app_replaced,
    fault_db_restart,
    fault_kill_tasks,
    fault_redis_restart,
    fault_stop_app,
    fault_two_workers,
)
from keyed_retries import fault_kill_app_keyed
from harness import (
    CA_FILE,
    ENV,
    SECRETS_DIR,
    LIVE_HTTP_PORT,
    LIVE_FILE,
    LIVE_PORT,
    LIVE_PROJECT,
    Stack,
    TAG,
    check,
    live_env,
    get_task,
    headers_once,
    inspect,
    log,
    manifest_names,
    post_task,
    proc_uid,
    read_secrets,
    request,
    run,
    security_headers,
)


def live_hardening(live):
    ids = live.containers()
    infos = [inspect(c) for c in ids]
    names = lambda bad: ", ".join(bad) or "none"
    bad_user, bad_ro, bad_cap, bad_nnp, bad_restart, bad_health, bad_grace, bad_uid = [], [], [], [], [], [], [], []
    for i in infos:
        n = i["Name"].lstrip("/")
        svc = i["Config"]["Labels"].get("com.docker.compose.service")
        one_shot = svc == "migrate"
        user = (i["Config"].get("User") or "").strip()
        if user in ("", "0", "root") or user.startswith("0:") or user.startswith("root:"):
            bad_user.append(f"{n}(user={user!r})")
        if not i["HostConfig"].get("ReadonlyRootfs"):
            bad_ro.append(n)
        if "ALL" not in [c.upper() for c in (i["HostConfig"].get("CapDrop") or [])]:
            bad_cap.append(n)
        if not any("no-new-privileges" in s for s in (i["HostConfig"].get("SecurityOpt") or [])):
            bad_nnp.append(n)
        if not one_shot and i["HostConfig"]["RestartPolicy"]["Name"] not in ("unless-stopped", "always"):
            bad_restart.append(n)
        hc = (i["Config"].get("Healthcheck") or {}).get("Test") or []
        if not one_shot and (not hc or hc[0] == "NONE"):
            bad_health.append(n)
        if (i["Config"].get("StopTimeout") or 10) <= 20:
            bad_grace.append(f"{n}({i['Config'].get('StopTimeout')})")
        pid = i["State"].get("Pid") or 0
        if pid:
            uid = proc_uid(pid)
            if uid in (None, 0):
                bad_uid.append(f"{n}(uid={uid})")
    running = sum(1 for i in infos if i["State"].get("Pid"))
    check("live: every container has a non-root user (docker inspect Config.User)", not bad_user,
          f"{len(infos)} containers; bad: {names(bad_user)}")
    check("live: every running container's process runs as non-root (host /proc)", not bad_uid,
          f"{running} running; bad: {names(bad_uid)}")
    check("live: every container has a read-only root filesystem", not bad_ro, f"bad: {names(bad_ro)}")
    check("live: every container drops ALL capabilities", not bad_cap, f"bad: {names(bad_cap)}")
    check("live: every container has no-new-privileges", not bad_nnp, f"bad: {names(bad_nnp)}")
    check("live: every long-running container has a restart policy", not bad_restart, f"bad: {names(bad_restart)}")
    check("live: every long-running container has a healthcheck", not bad_health, f"bad: {names(bad_health)}")
    check("live: stop_grace_period > SHUTDOWN_TIMEOUT (20 s) everywhere", not bad_grace, f"bad: {names(bad_grace)}")

    published = {}
    for i in infos:
        svc = i["Config"]["Labels"].get("com.docker.compose.service")
        binds = []
        for port, hb in (i["HostConfig"].get("PortBindings") or {}).items():
            for b in hb or []:
                binds.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{port}")
        if binds:
            published.setdefault(svc, []).extend(binds)
    only_edge = set(published) == {"edge-ports"} and len(published["edge-ports"]) == 2 and all(
        b.startswith("127.0.0.1:") for b in published.get("edge-ports", []))
    check("live: only edge-ports (the edge's namespace) publishes ports (HTTPS and HTTP), on 127.0.0.1; httpd, "
          "app, db and redis none",
          only_edge, f"published: {published}")
    bad_logs = [i["Name"].lstrip("/") for i in infos
                if (i["HostConfig"].get("LogConfig") or {}).get("Type") != "json-file"
                or not (i["HostConfig"]["LogConfig"].get("Config") or {}).get("max-size")
                or not (i["HostConfig"]["LogConfig"].get("Config") or {}).get("max-file")]
    check("live: every container's log rotates (json-file with max-size and max-file)", not bad_logs,
          f"{len(infos)} containers; bad: {bad_logs}")
    # The engine's default ports are not reachable on the host's loopback through Docker (nothing published).
    details = []
    for svc, cport in (("db", 5432), ("redis", 6379)):
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", cport))
            details.append(f"127.0.0.1:{cport} open (not ours: nothing published)")
        except OSError:
            details.append(f"127.0.0.1:{cport} refused")
        finally:
            s.close()
    log("live: host loopback probe: " + "; ".join(details))


def live_basics(live, port):
    r = request(port, "GET", "/readyz")
    check("live: /readyz through nginx is 200", r.status == 200, repr(r))
    r = request(port, "GET", "/")
    check("live: / through nginx renders", r.status == 200 and b"<html" in r.body.lower(),
          f"{r.status} server={r.headers.get('server')}")
    check("live: nginx hides its version", r.headers.get("server") == "nginx", f"Server: {r.headers.get('server')}")
    # The app sets the security headers; nginx must pass them once, not add its own copy (nor drop them).
    sec = security_headers()
    bad = headers_once(r, {**sec, "x-request-id": None})
    check(f"live: a proxied answer (/) has each of the {len(sec)} security headers and X-Request-Id exactly once",
          not bad and len(sec) == 9, f"wrong: {bad or 'none'}")

    plain, hashed = manifest_names()
    r = request(port, "GET", f"/static/{hashed}", headers={"Accept-Encoding": "gzip"})
    cc = r.headers.get("cache-control", "")
    check(f"live: hashed /static/{hashed} served by nginx with immutable cache",
          r.status == 200 and "immutable" in cc and "max-age=31536000" in cc, f"{r.status} Cache-Control: {cc}")
    check("live: the gzip variant is served when asked (gzip_static)",
          r.headers.get("content-encoding") == "gzip" and "accept-encoding" in r.headers.get("vary", "").lower(),
          f"Content-Encoding: {r.headers.get('content-encoding')}, Vary: {r.headers.get('vary')}")
    r2 = request(port, "GET", f"/static/{hashed}")
    check("live: the identity variant when gzip is not accepted", r2.status == 200 and
          "content-encoding" not in r2.headers and len(r2.body) > 0, f"{r2.status} {len(r2.body)} bytes")
    # A static file is nginx's own answer: nginx adds the same headers, with the app's values, once.
    bad = headers_once(r2, {**sec, "x-request-id": None, "cache-control": None})
    check(f"live: a static file (nginx's own answer) has the {len(sec)} security headers of the app, once each",
          r2.status == 200 and not bad, f"wrong: {bad or 'none'}")
    r3 = request(port, "GET", f"/static/{plain}")
    cc3 = r3.headers.get("cache-control", "")
    check(f"live: unhashed /static/{plain} gets a short cache", r3.status == 200 and "immutable" not in cc3,
          f"Cache-Control: {cc3}")
    r4 = request(port, "GET", "/metrics")
    check("live: /metrics is not exposed through the proxy", r4.status != 200 or b"# TYPE" not in r4.body,
          f"{r4.status}")

    rid = "e2e-" + uuid.uuid4().hex[:16]
    r = post_task(port, "wordcount", {"text": "to be or not to be"}, rid=rid)
    tid = (r.json() or {}).get("id")
    check("live: POST /api/tasks through nginx -> 202, X-Request-Id echoed",
          r.status == 202 and r.headers.get("x-request-id") == rid, f"{r.status} x-request-id={r.headers.get('x-request-id')}")
    if not tid:
        return
    g = get_task(port, tid, wait=20)
    task = g.json() or {}
    check("live: the task reaches done, carrying the request id",
          task.get("state") == "done" and task.get("request_id") == rid,
          f"state={task.get('state')} request_id={task.get('request_id')} result={task.get('result')}")
    found = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = {svc: rid in live.logs(svc) for svc in ("httpd", "app", "tasks")}
        if all(found.values()):
            break
        time.sleep(1)
    check("live: the request id is in the logs of nginx, the app and the worker", all(found.values()), f"{found}")
    # The client's address survives the edge (X-Real-IP + realip in httpd): httpd logs the peer the edge saw, not
    # the edge's own address.
    holder = inspect(live.container("edge-ports"))  # the edge runs in its network namespace
    edge_ips = {n.get("IPAddress") for n in holder["NetworkSettings"]["Networks"].values()}
    logged = [json.loads(line).get("remote_addr") for line in live.logs("httpd").splitlines()
              if line.startswith("{") and rid in line and '"remote_addr"' in line]
    check("live: httpd logs the client's address, not the edge's", logged and not set(logged) & edge_ips,
          f"logged {sorted(set(logged))}, edge {sorted(edge_ips)}")
    return tid


def live_bad_input(port):
    body = b'{"kind":"wordcount","payload":{"text":"' + b"x" * (1536 * 1024) + b'"}}'
    r = request(port, "POST", "/api/tasks", body, headers={"Content-Type": "application/json"})
    check("live: oversize body (1.5 MiB) through nginx -> 413", r.status == 413, repr(r))
    bad = headers_once(r, security_headers())
    check("live: the edge's own 413 (it holds MAX_BODY_BYTES first) has the security headers once each",
          r.status == 413 and not bad,
          f"wrong: {bad or 'none'}")
    r = request(port, "GET", "/", host="evil.example.com")
    check("live: unknown Host is rejected", r.status is None or 400 <= r.status < 500,
          r.error or f"{r.status}")
    r = request(port, "GET", "/readyz", host="evil.example.com")
    check("live: unknown Host is rejected on /readyz too", r.status is None or 400 <= r.status < 500,
          r.error or f"{r.status}")
    r = request(port, "POST", "/api/tasks", b'{"kind": "wordcount", ', headers={"Content-Type": "application/json"})
    j = r.json()
    check("live: malformed JSON -> 400 with a JSON error body", r.status == 400 and isinstance(j, dict) and "error" in j,
          repr(r))
    r = post_task(port, "nope", {})
    check("live: unknown task kind -> 422", r.status == 422, repr(r))


def phase_live():
    with recorded_deployment():
        live_phase()


def live_phase():
    env = live_env()
    live = Stack(LIVE_PROJECT, LIVE_FILE, env)
    port = LIVE_PORT
    log(f"live: docker compose -f compose/live.yml up --wait (project {LIVE_PROJECT}, port {port})")
    t = time.monotonic()
    p = live.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    if not check("live: `up --wait` returns with the stack healthy", p.returncode == 0,
                 f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:]):
        live.save_logs("live-up")
        return
    follower = live.follow_logs("live-all")  # deploys remove replicas, and their logs with them
    steps = [
        ("basics", lambda: live_basics(live, port)),
        ("hardening", lambda: live_hardening(live)),
        ("bad input", lambda: live_bad_input(port)),
        ("tls and redirect", lambda: tls_and_redirect(live)),
        ("observatory", lambda: observatory_check(port, LIVE_HTTP_PORT, host="localhost", ca_file=CA_FILE)),
        ("refused certificate", refused_certificate),
        ("domain at run time", domain_at_run_time),
        ("rate limit", lambda: rate_limit(live)),
        ("queue backlog", lambda: queue_backlog(live)),
        ("fault db restart", lambda: fault_db_restart(live, port)),
        ("fault redis restart", lambda: fault_redis_restart(live, port)),
        ("fault kill tasks", lambda: fault_kill_tasks(live, port)),
        ("fault stop app", lambda: fault_stop_app(live, port)),
        ("fault app replaced", lambda: fault_app_replaced(live, port)),
        ("fault kill app, keyed retries", lambda: fault_kill_app_keyed(live, port)),
        ("fault two workers", lambda: fault_two_workers(live, port)),
    ]
    # E2E_LIVE_STEPS="basics,fault kill app, keyed retries" (names separated by commas) runs only those steps, then
    # the deploy: for working on one of them. Every step runs by default.
    only = {s.strip() for s in ENV.get("E2E_LIVE_STEPS", "").split(",") if s.strip()}
    old_task = None
    for name, fn in steps:
        if only and name not in only:
            continue
        log(f"live: {name}")
        try:
            r = fn()
            if name == "basics":
                old_task = r
        except Exception as e:  # a broken step is a failure, the next steps still run
            check(f"live: {name} ran to the end", False, f"{type(e).__name__}: {e}")
    log("live: deploy N+1, then roll back to N")
    try:
        deploy_and_rollback(live, port, old_task)
    except Exception as e:
        check("live: deploy and rollback ran to the end", False, f"{type(e).__name__}: {e}")
    check_recorded(live, TAG)
    first_deploy_curls(os.path.dirname(SECRETS_DIR), LIVE_PORT, LIVE_HTTP_PORT)
    day2_commands(live)

    secrets = read_secrets()
    blob_inspect = "".join(run(["docker", "inspect", c]).stdout for c in live.containers())
    blob_logs = live.logs()
    leaks = [f"{n} in docker inspect" for n, v in secrets.items() if v in blob_inspect]
    leaks += [f"{n} in logs" for n, v in secrets.items() if v in blob_logs]
    check("live: no secret in `docker inspect` (env, command) nor in any container log", not leaks,
          f"checked {len(secrets)} secrets, {len(blob_logs.splitlines())} log lines; leaks: {leaks or 'none'}")
    path = live.save_logs("live")
    follower.terminate()
    follower.wait(30)
    log(f"live: logs saved to {path} (every replica's, removed ones too: live-all.log)")
    run_down(live)
    p = live.compose("down", "--volumes", "--remove-orphans", timeout=180)
    check("live: `down --volumes` removes the stack", p.returncode == 0, p.stderr.strip()[-300:] if p.returncode else "")
