#!/usr/bin/env python3
"""End-to-end checks of compose/dev.yml and compose/live.yml on a real Docker engine (python3 stdlib only).

Run through tests/e2e/run.sh, which builds the app and the stand-in images, sets the variables below, and removes
everything afterwards. Prints one PASS/FAIL line per check and ends with `N passed, M failed`.

Environment (set by run.sh): E2E_REPO, E2E_DEV_PROJECT, E2E_LIVE_PROJECT, E2E_DEV_PORT, E2E_LIVE_PORT, E2E_TAG,
E2E_TAG_NEXT, E2E_STATIC_DIR (collectstatic output, for manifest.json), E2E_LOG_DIR, SECRETS_DIR, POSTGRES_IMAGE,
REDIS_IMAGE, E2E_PHASES (default "dev live").
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

ENV = os.environ
REPO = ENV["E2E_REPO"]
DEV_FILE = os.path.join(REPO, "compose", "dev.yml")
LIVE_FILE = os.path.join(REPO, "compose", "live.yml")
DEV_PROJECT = ENV["E2E_DEV_PROJECT"]
LIVE_PROJECT = ENV["E2E_LIVE_PROJECT"]
DEV_PORT = int(ENV["E2E_DEV_PORT"])
LIVE_PORT = int(ENV["E2E_LIVE_PORT"])
TAG = ENV["E2E_TAG"]
TAG_NEXT = ENV.get("E2E_TAG_NEXT", "")
STATIC_DIR = ENV["E2E_STATIC_DIR"]
LOG_DIR = ENV.get("E2E_LOG_DIR", "/tmp")
SECRETS_DIR = ENV["SECRETS_DIR"]
PHASES = ENV.get("E2E_PHASES", "dev live").split()
T0 = time.monotonic()

passed = 0
failed = 0


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f" -- {detail}" if detail else ""), flush=True)
    return ok


# --------------------------------------------------------------------------------------------------------------
# HTTP


class Resp:
    def __init__(self, status=None, headers=None, body=b"", error=None, elapsed=0.0):
        self.status, self.headers, self.body, self.error, self.elapsed = status, headers or {}, body, error, elapsed

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        if self.error:
            return f"<error {self.error}>"
        return f"<{self.status} {self.body[:160]!r}>"


def request(port, method, path, body=None, headers=None, host=None, timeout=40.0):
    """One HTTP/1.1 request to 127.0.0.1:port with full control of the Host header. Never raises."""
    h = {"Host": host if host is not None else f"localhost:{port}"}
    h.update(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=h)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) before the whole body is sent: read that answer below
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data, elapsed=time.monotonic() - started)
    except (OSError, http.client.HTTPException) as e:
        return Resp(error=f"{type(e).__name__}: {e}", elapsed=time.monotonic() - started)
    finally:
        conn.close()


def wait_http(port, path, want=200, timeout=60.0, host=None):
    """Poll until path answers `want`; returns seconds waited or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        r = request(port, "GET", path, host=host, timeout=5)
        if r.status == want:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def post_task(port, kind, payload, rid=None):
    headers = {"X-Request-Id": rid} if rid else {}
    return request(port, "POST", "/api/tasks", {"kind": kind, "payload": payload}, headers=headers)


def get_task(port, task_id, wait=None):
    path = f"/api/tasks/{task_id}" + (f"?wait={wait}" if wait else "")
    return request(port, "GET", path, timeout=(wait or 0) + 15)


def wait_tasks_done(port, ids, timeout):
    """Long-poll every task until done/dead or timeout; returns {id: task json or None}."""
    deadline = time.monotonic() + timeout
    result = {}
    for tid in ids:
        task = None
        while time.monotonic() < deadline:
            left = max(1, min(25, int(deadline - time.monotonic())))
            r = get_task(port, tid, wait=left)
            task = r.json() if r.status == 200 else None
            if task and task.get("state") in ("done", "dead"):
                break
            time.sleep(0.5)
        result[tid] = task
    return result


# --------------------------------------------------------------------------------------------------------------
# Docker


def run(cmd, timeout=600, env=None, check_rc=False):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return p


def compose_env(extra=None):
    env = dict(ENV)
    env.pop("STATIC_DIR", None)  # compose/dev.yml passes STATIC_DIR through from the shell
    env.update(extra or {})
    return env


class Stack:
    def __init__(self, project, file, env):
        self.project, self.file, self.env = project, file, env

    def compose(self, *args, timeout=600, env_extra=None):
        env = dict(self.env)
        env.update(env_extra or {})
        return run(["docker", "compose", "-p", self.project, "-f", self.file, *args], timeout=timeout, env=env)

    def containers(self, service=None, all_=True):
        cmd = ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}"]
        if all_:
            cmd.insert(2, "-a")
        if service:
            cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        return [c for c in run(cmd).stdout.split() if c]

    def container(self, service):
        ids = self.containers(service)
        if not ids:
            raise RuntimeError(f"no container for service {service}")
        return ids[0]

    def logs(self, service=None):
        args = ["logs", "--no-color", "--no-log-prefix"] + ([service] if service else [])
        p = self.compose(*args, timeout=120)
        return p.stdout + p.stderr

    def save_logs(self, label):
        path = os.path.join(LOG_DIR, f"{label}.log")
        p = self.compose("logs", "--no-color", "--timestamps", timeout=120)
        with open(path, "w") as f:
            f.write(p.stdout + p.stderr)
        return path


def inspect(cid):
    return json.loads(run(["docker", "inspect", cid], check_rc=True).stdout)[0]


def short(cid):
    return inspect(cid)["Name"].lstrip("/")


def proc_uid(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Load:
    """Background request loop: GET /api/tasks?limit=5 (needs the database) and POST wordcount tasks."""

    def __init__(self, port, threads=3, post_every=3):
        self.port, self.threads, self.post_every = port, threads, post_every
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples = []  # (t, status or error)
        self.accepted = []
        self.workers = []

    def _loop(self, n):
        i = 0
        while not self.stop.is_set():
            i += 1
            if i % self.post_every == 0:
                r = post_task(self.port, "wordcount", {"text": f"load {n} {i} load"})
                if r.status == 202 and r.json():
                    with self.lock:
                        self.accepted.append(r.json()["id"])
            else:
                r = request(self.port, "GET", "/api/tasks?limit=5", timeout=10)
            with self.lock:
                self.samples.append((time.monotonic(), r.status if r.status else "conn-error"))
            time.sleep(0.05)

    def __enter__(self):
        for n in range(self.threads):
            t = threading.Thread(target=self._loop, args=(n,), daemon=True)
            t.start()
            self.workers.append(t)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.workers:
            t.join(30)

    def outage(self):
        """Seconds from the first to the last answer that was not 200/202 (0 when there was none)."""
        with self.lock:
            bad = [t for t, s in self.samples if s not in (200, 202)]
        return (max(bad) - min(bad)) if bad else 0.0

    def histogram(self, since=0.0):
        h = {}
        with self.lock:
            for t, s in self.samples:
                if t >= since:
                    h[s] = h.get(s, 0) + 1
        return h


# --------------------------------------------------------------------------------------------------------------
# Phases


def manifest_names():
    with open(os.path.join(STATIC_DIR, "manifest.json")) as f:
        paths = json.load(f)["paths"]
    css = [k for k in paths if k.endswith(".css")]
    plain = css[0] if css else sorted(paths)[0]
    return plain, paths[plain]


def phase_dev():
    env = compose_env({"APP_VERSION": TAG, "DEV_HTTP_PORT": str(DEV_PORT)})
    dev = Stack(DEV_PROJECT, DEV_FILE, env)
    port = DEV_PORT
    log(f"dev: docker compose -f compose/dev.yml up --wait (project {DEV_PROJECT}, port {port})")
    t = time.monotonic()
    p = dev.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    if not check("dev: `up --wait` returns with the stack healthy", p.returncode == 0,
                 f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:]):
        dev.save_logs("dev-up")
        return
    httpd = inspect(dev.container("httpd"))["State"]
    check("dev: httpd one-shot (`nginx -t` on the staticlayer image) exited 0", httpd["ExitCode"] == 0,
          f"exit {httpd['ExitCode']}")

    r = request(port, "GET", "/")
    check("dev: / renders", r.status == 200 and "text/html" in r.headers.get("content-type", "")
          and b"<html" in r.body.lower(), f"{r.status} {r.headers.get('content-type')} {len(r.body)} bytes")
    r = request(port, "GET", "/readyz")
    check("dev: /readyz is 200", r.status == 200, repr(r))

    r = post_task(port, "wordcount", {"text": "a b a"})
    tid = (r.json() or {}).get("id")
    ok = r.status == 202 and tid and r.headers.get("location") == f"/api/tasks/{tid}"
    check("dev: POST /api/tasks -> 202 with Location", ok, repr(r))
    task = None
    if tid:
        g = get_task(port, tid, wait=20)
        task = g.json() or {}
        check("dev: the task reaches done", task.get("state") == "done",
              f"state={task.get('state')} result={task.get('result')} in {g.elapsed:.2f}s")

    plain, hashed = manifest_names()
    for name in (plain, hashed):
        r = request(port, "GET", f"/static/{name}")
        check(f"dev: the app serves /static/{name}", r.status == 200 and len(r.body) > 0,
              f"{r.status} {r.headers.get('content-type')} cache-control={r.headers.get('cache-control')}")

    log("dev: docker compose down (keeps volumes), then up --wait again")
    p = dev.compose("down", timeout=180)
    vols = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={DEV_PROJECT}"]).stdout.split()
    check("dev: `down` keeps the database volume", p.returncode == 0 and f"{DEV_PROJECT}_db-data" in vols,
          f"volumes: {' '.join(vols)}")
    t = time.monotonic()
    p = dev.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    check("dev: second `up --wait`", p.returncode == 0,
          f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1000:])
    if tid:
        g = get_task(port, tid)
        t2 = g.json() or {}
        check("dev: the second `up` still sees the earlier task", g.status == 200 and t2.get("state") == "done",
              f"{g.status} state={t2.get('state')}")
    dev.save_logs("dev")
    p = dev.compose("down", "--volumes", "--remove-orphans", timeout=180)
    check("dev: `down --volumes` removes the stack", p.returncode == 0, p.stderr.strip()[-300:] if p.returncode else "")


def read_secrets():
    out = {}
    for name in ("postgres_password", "redis_password", "secret_key"):
        with open(os.path.join(SECRETS_DIR, name)) as f:
            out[name] = f.read().strip()
    return out


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
    only_httpd = set(published) <= {"httpd"} and all(
        b.startswith("127.0.0.1:") for b in published.get("httpd", []))
    check("live: only httpd publishes a port, on 127.0.0.1; db and redis publish none",
          only_httpd and "db" not in published and "redis" not in published, f"published: {published}")
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
    sec = ["x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy"]
    missing = [h for h in sec if h not in r.headers]
    check("live: security headers set", not missing, f"missing: {missing or 'none'}")

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
    return tid


def live_bad_input(port):
    body = b'{"kind":"wordcount","payload":{"text":"' + b"x" * (1536 * 1024) + b'"}}'
    r = request(port, "POST", "/api/tasks", body, headers={"Content-Type": "application/json"})
    check("live: oversize body (1.5 MiB) through nginx -> 413", r.status == 413, repr(r))
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


def fault_db_restart(live, port):
    app = live.container("app")
    before = inspect(app)
    with Load(port) as load:
        time.sleep(2)
        t_stop = time.monotonic()
        run(["docker", "stop", "-t", "30", live.container("db")], check_rc=True)
        time.sleep(3)
        t_start = time.monotonic()
        run(["docker", "start", live.container("db")], check_rc=True)
        rec = wait_http(port, "/readyz", 200, timeout=60)
        t_rec = time.monotonic()
        time.sleep(2)
    hist = load.histogram()
    during = load.histogram(since=t_stop)
    after = inspect(app)
    same_app = (before["State"]["StartedAt"] == after["State"]["StartedAt"] and after["RestartCount"] == 0)
    results = wait_tasks_done(port, load.accepted, timeout=90)
    lost = [t for t, v in results.items() if not v or v.get("state") != "done"]
    unexpected = {s: n for s, n in hist.items() if s not in (200, 202, 503)}
    log(f"FIGURE db restart: requests {sum(hist.values())} {hist}; db down 3.0 s, API answered 503 for "
        f"{load.outage():.1f} s; "
        f"recovered {rec if rec is None else round(rec, 2)} s after `docker start db` "
        f"({t_rec - t_stop:.1f} s after the stop); tasks accepted {len(load.accepted)}, lost {len(lost)}; "
        f"app restarts {after['RestartCount']}")
    check("fault db restart: 503 while the database is down", during.get(503, 0) > 0, f"{during}")
    check("fault db restart: only 200/202/503 answers (no 500, no dropped connection)", not unexpected,
          f"unexpected: {unexpected or 'none'}")
    check("fault db restart: /readyz recovers without restarting the app", rec is not None and same_app,
          f"recovered in {rec if rec is None else round(rec, 2)} s, app restarts {after['RestartCount']}")
    check("fault db restart: tasks lost = 0", not lost, f"accepted {len(load.accepted)}, lost {len(lost)}")


def fault_redis_restart(live, port):
    ids = []
    for i in range(8):
        r = post_task(port, "sleep", {"ms": 1500})
        if r.status == 202:
            ids.append(r.json()["id"])
    time.sleep(0.5)
    t = time.monotonic()
    run(["docker", "restart", "-t", "30", live.container("redis")], check_rc=True)
    rec = wait_http(port, "/readyz", 200, timeout=60)
    results = wait_tasks_done(port, ids, timeout=120)
    t_all = time.monotonic() - t
    lost = [k for k, v in results.items() if not v or v.get("state") != "done"]
    log(f"FIGURE redis restart: {len(ids)} sleep tasks queued/running; /readyz back "
        f"{rec if rec is None else round(rec, 2)} s after the restart; all finished {t_all:.1f} s after it; "
        f"tasks lost {len(lost)}")
    check("fault redis restart: posted 8 tasks before the restart", len(ids) == 8, f"{len(ids)}")
    check("fault redis restart: tasks lost = 0", not lost and len(ids) == 8,
          f"lost {len(lost)}: " + ", ".join(f"{k}={(v or {}).get('state')}" for k, v in results.items() if k in lost))
    check("fault redis restart: /readyz recovers", rec is not None, f"{rec}")


def fault_kill_tasks(live, port):
    r = post_task(port, "sleep", {"ms": 6000})
    tid = (r.json() or {}).get("id")
    if not check("fault kill tasks: sleep task accepted", r.status == 202 and tid, repr(r)):
        return
    deadline = time.monotonic() + 20
    state = None
    while time.monotonic() < deadline:
        state = (get_task(port, tid).json() or {}).get("state")
        if state == "running":
            break
        time.sleep(0.2)
    check("fault kill tasks: the task is running before the kill", state == "running", f"state={state}")
    cid = live.container("tasks")
    t = time.monotonic()
    run(["docker", "kill", "-s", "KILL", cid], check_rc=True)
    time.sleep(1)
    st = inspect(cid)["State"]
    how = "restart policy"
    if not st["Running"]:
        # `docker kill` counts as a manual stop: the restart policy does not apply, so restart it as an operator.
        run(["docker", "start", cid], check_rc=True)
        how = "docker start"
    res = wait_tasks_done(port, [tid], timeout=120)[tid] or {}
    took = time.monotonic() - t
    log(f"FIGURE tasks SIGKILL: task {res.get('state')} {took:.1f} s after the kill "
        f"(restarted by {how}; attempts {res.get('attempts')}); tasks lost {0 if res.get('state') == 'done' else 1}")
    check("fault kill tasks: the task completes after the restart (tasks lost = 0)", res.get("state") == "done",
          f"state={res.get('state')} attempts={res.get('attempts')} after {took:.1f}s")


def fault_stop_app(live, port):
    r = post_task(port, "sleep", {"ms": 5000})
    tid = (r.json() or {}).get("id")
    if not check("fault stop app: sleep task accepted", r.status == 202 and tid, repr(r)):
        return
    out = {}

    def slow():
        out["r"] = get_task(port, tid, wait=25)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(1.0)
    cid = live.container("app")
    t = time.monotonic()
    p = run(["docker", "stop", "-t", "30", cid])
    stop_took = time.monotonic() - t
    th.join(60)
    res = out.get("r") or Resp(error="no answer")
    body = res.json() or {}
    code = inspect(cid)["State"]["ExitCode"]
    run(["docker", "start", cid], check_rc=True)
    back = wait_http(port, "/readyz", 200, timeout=90)
    log(f"FIGURE app stop during a slow request: request {res.status or res.error} after {res.elapsed:.1f} s "
        f"(task {body.get('state')}); `docker stop` took {stop_took:.1f} s, exit {code}; "
        f"app back {back if back is None else round(back, 1)} s after `docker start`")
    check("fault stop app: the in-flight slow request completes", res.status == 200 and bool(body),
          f"{res.status or res.error}, state={body.get('state')}")
    check("fault stop app: clean exit on SIGTERM within the grace period", p.returncode == 0 and code == 0,
          f"exit {code} after {stop_took:.1f}s")
    check("fault stop app: app serves again after start", back is not None, f"{back}")


def worker_starts(live):
    """{task_id: [container names that logged 'task started']} from the JSON logs of every tasks container."""
    starts = {}
    for cid in live.containers("tasks"):
        name = short(cid)
        p = run(["docker", "logs", cid])
        for line in (p.stdout + p.stderr).splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                j = json.loads(line)
            except ValueError:
                continue
            msg = j.get("fields", {}).get("message") or j.get("message")
            span = j.get("span") or {}
            if msg == "task started" and span.get("task_id"):
                starts.setdefault(span["task_id"], []).append(name)
    return starts


def fault_two_workers(live, port):
    p = live.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--no-recreate", "--scale", "tasks=2",
                     timeout=200)
    n = len(live.containers("tasks", all_=False))
    if not check("replicas: a second tasks replica starts", p.returncode == 0 and n == 2,
                 f"{n} running" + ("" if p.returncode == 0 else ": " + p.stderr.strip()[-500:])):
        return
    ids = []
    for i in range(16):
        r = post_task(port, "sleep", {"ms": 400})
        if r.status == 202:
            ids.append(r.json()["id"])
    results = wait_tasks_done(port, ids, timeout=120)
    done = [k for k, v in results.items() if v and v.get("state") == "done"]
    multi_attempt = [k for k, v in results.items() if v and v.get("attempts") != 1]
    time.sleep(1)
    starts = worker_starts(live)
    twice = {k: v for k, v in starts.items() if k in ids and len(v) != 1}
    per = {}
    for k in ids:
        for c in starts.get(k, []):
            per[c] = per.get(c, 0) + 1
    log(f"FIGURE two workers: {len(done)}/{len(ids)} done; started per replica {per}; "
        f"started more than once {len(twice)}; attempts != 1: {len(multi_attempt)}; tasks lost {len(ids) - len(done)}")
    check("replicas: all 16 tasks done (tasks lost = 0)", len(done) == 16, f"{len(done)}/16")
    check("replicas: no task ran twice (one 'task started' each, attempts = 1)",
          not twice and not multi_attempt and len([k for k in ids if k in starts]) == len(ids),
          f"twice: {len(twice)}, attempts!=1: {len(multi_attempt)}, seen in logs {len([k for k in ids if k in starts])}")
    check("replicas: both replicas took work", len(per) == 2, f"{per}")


def deploy_and_rollback(live, port, old_task):
    if not TAG_NEXT:
        return
    results = []
    for label, tag in (("deploy N+1", TAG_NEXT), ("roll back to N", TAG)):
        with Load(port, threads=1, post_every=1000) as load:
            t = time.monotonic()
            p = live.compose("up", "--detach", "--wait", "--wait-timeout", "180", timeout=240,
                             env_extra={"APP_VERSION": tag})
            took = time.monotonic() - t
            time.sleep(1)
        hist = load.histogram()
        images = {inspect(c)["Config"]["Labels"].get("com.docker.compose.service"): inspect(c)["Config"]["Image"]
                  for c in live.containers(all_=False)}
        ours = {s: i for s, i in images.items() if s in ("app", "tasks", "httpd")}
        ok_tag = all(i.endswith(":" + tag) for i in ours.values()) and len(ours) == 3
        g = get_task(port, old_task) if old_task else Resp(status=200, body=b"{}")
        ok = p.returncode == 0 and ok_tag and g.status == 200 and wait_http(port, "/readyz", 200, 30) is not None
        fails = sum(n for s, n in hist.items() if s != 200)
        log(f"FIGURE {label} (APP_VERSION={tag}): `up --wait` {took:.1f} s; during it {sum(hist.values())} requests, "
            f"{fails} not 200 {hist}, unavailable for {load.outage():.1f} s (one app and one httpd replica)")
        results.append(check(f"live: {label} (APP_VERSION={tag}) with data kept", ok,
                             f"images {ours}; earlier task {g.status}" +
                             ("" if p.returncode == 0 else ": " + p.stderr.strip()[-500:])))


def phase_live():
    env = compose_env({"APP_VERSION": TAG, "LIVE_HTTP_PORT": str(LIVE_PORT), "SECRETS_DIR": SECRETS_DIR})
    live = Stack(LIVE_PROJECT, LIVE_FILE, env)
    port = LIVE_PORT
    log(f"live: docker compose -f compose/live.yml up --wait (project {LIVE_PROJECT}, port {port})")
    t = time.monotonic()
    p = live.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    if not check("live: `up --wait` returns with the stack healthy", p.returncode == 0,
                 f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:]):
        live.save_logs("live-up")
        return
    steps = [
        ("basics", lambda: live_basics(live, port)),
        ("hardening", lambda: live_hardening(live)),
        ("bad input", lambda: live_bad_input(port)),
        ("fault db restart", lambda: fault_db_restart(live, port)),
        ("fault redis restart", lambda: fault_redis_restart(live, port)),
        ("fault kill tasks", lambda: fault_kill_tasks(live, port)),
        ("fault stop app", lambda: fault_stop_app(live, port)),
        ("fault two workers", lambda: fault_two_workers(live, port)),
    ]
    old_task = None
    for name, fn in steps:
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

    secrets = read_secrets()
    blob_inspect = "".join(run(["docker", "inspect", c]).stdout for c in live.containers())
    blob_logs = live.logs()
    leaks = [f"{n} in docker inspect" for n, v in secrets.items() if v in blob_inspect]
    leaks += [f"{n} in logs" for n, v in secrets.items() if v in blob_logs]
    check("live: no secret in `docker inspect` (env, command) nor in any container log", not leaks,
          f"checked {len(secrets)} secrets, {len(blob_logs.splitlines())} log lines; leaks: {leaks or 'none'}")
    path = live.save_logs("live")
    log(f"live: logs saved to {path}")
    p = live.compose("down", "--volumes", "--remove-orphans", timeout=180)
    check("live: `down --volumes` removes the stack", p.returncode == 0, p.stderr.strip()[-300:] if p.returncode else "")


def main():
    for phase in PHASES:
        try:
            {"dev": phase_dev, "live": phase_live}[phase]()
        except Exception as e:
            check(f"{phase}: phase ran to the end", False, f"{type(e).__name__}: {e}")
    result = ENV.get("E2E_RESULT")
    if result:  # run.sh adds its own checks and prints the closing line after cleaning up
        with open(result, "w") as f:
            f.write(f"{passed} {failed}\n")
    else:
        print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
