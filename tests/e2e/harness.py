"""What every e2e phase shares: the settings run.sh passes, PASS/FAIL accounting, HTTP and Docker helpers, load.

Environment (set by run.sh): E2E_REPO, E2E_DEV_PROJECT, E2E_LIVE_PROJECT, E2E_DEV_PORT, E2E_LIVE_PORT (the live stack's
HTTPS port), E2E_LIVE_HTTP_PORT (its HTTP port: redirects, ACME challenges), E2E_CA_FILE (the certificate the live
stack serves, self-signed as the README makes it: the suite's trust anchor), E2E_TAG,
E2E_TAG_NEXT, E2E_STATIC_DIR (collectstatic output, for manifest.json), E2E_LOG_DIR, SECRETS_DIR, POSTGRES_IMAGE,
REDIS_IMAGE, E2E_PHASES (run.sh gives the default; "soak" is opt-in).
"""

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

ENV = os.environ
REPO = ENV["E2E_REPO"]
DEV_FILE = os.path.join(REPO, "compose", "dev.yml")
LIVE_FILE = os.path.join(REPO, "compose", "live.yml")
DEV_PROJECT = ENV["E2E_DEV_PROJECT"]
LIVE_PROJECT = ENV["E2E_LIVE_PROJECT"]
DEV_PORT = int(ENV["E2E_DEV_PORT"])
LIVE_PORT = int(ENV["E2E_LIVE_PORT"])
LIVE_HTTP_PORT = int(ENV["E2E_LIVE_HTTP_PORT"])
CA_FILE = ENV["E2E_CA_FILE"]
# Ports that speak TLS: request() talks HTTPS to these, trusting CA_FILE only (certificate and name verified).
TLS_PORTS = {LIVE_PORT}
TAG = ENV["E2E_TAG"]
TAG_NEXT = ENV.get("E2E_TAG_NEXT", "")
STATIC_DIR = ENV["E2E_STATIC_DIR"]
LOG_DIR = ENV.get("E2E_LOG_DIR", "/tmp")
SECRETS_DIR = ENV["SECRETS_DIR"]
PHASES = ENV["E2E_PHASES"].split()  # run.sh sets it, its default included
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


class Resp:
    def __init__(self, status=None, headers=None, body=b"", error=None, elapsed=0.0, raw_headers=None):
        self.status, self.headers, self.body, self.error, self.elapsed = status, headers or {}, body, error, elapsed
        self.raw_headers = raw_headers or []  # every (name, value) as sent, repeated names included

    def header_values(self, name):
        return [v for k, v in self.raw_headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        if self.error:
            return f"<error {self.error}>"
        return f"<{self.status} {self.body[:160]!r}>"


# Where a port is served when not on 127.0.0.1: {port: [address, ...]}, the nodes of the cluster phase, tried the way
# a load balancer in front of them sends connections: each new one to the next address in turn, past an address
# that refused or did not answer a connection within CONNECT_TIMEOUT (then left out for DOWN_FOR seconds). A
# request that was never sent is safe to send to the next one, whatever its method.
TARGETS = {}
CONNECT_TIMEOUT = 2.0
DOWN_FOR = 5.0
_down = {}  # address -> monotonic time until which it is left out
_turn = [0]
_turn_lock = threading.Lock()


class NoTarget(OSError):
    pass


def mark_down(addr):
    """A node that closed a kept-alive connection is stopping its edge (nginx closes its idle connections on its
    way out, and for a moment still accepts new ones it will close unread): new connections go to the others for
    DOWN_FOR seconds, as a load balancer's passive health check does."""
    _down[addr] = time.monotonic() + DOWN_FOR


def open_connection(port, timeout, tls=None):
    """(connection, address): an HTTP(S) connection to port on 127.0.0.1 or, for a port in TARGETS, on the next
    address that accepts it. HTTPS when the port is in TLS_PORTS (or `tls` is an SSLContext), verified for the name
    localhost whatever the address (the certificate's name)."""
    if tls is None and port in TLS_PORTS:
        tls = tls_context()
    addrs = TARGETS.get(port)
    if not addrs:
        if tls:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls), "127.0.0.1"
        return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout), "127.0.0.1"
    with _turn_lock:
        _turn[0] += 1
        first = _turn[0]
    now = time.monotonic()
    order = [addrs[(first + k) % len(addrs)] for k in range(len(addrs))]
    order = [a for a in order if _down.get(a, 0) <= now] + [a for a in order if _down.get(a, 0) > now]
    errors = []
    for addr in order:
        try:
            sock = socket.create_connection((addr, port), timeout=CONNECT_TIMEOUT)
        except OSError as e:
            _down[addr] = time.monotonic() + DOWN_FOR
            errors.append(f"{addr}: {type(e).__name__}")
            continue
        sock.settimeout(timeout)
        if tls:
            conn = http.client.HTTPSConnection("localhost", port, timeout=timeout, context=tls)
        else:
            conn = http.client.HTTPConnection("localhost", port, timeout=timeout)
        # http.client connects through this (TLS is wrapped onto it for "localhost"): the socket just made, and a
        # new one to the same address when the connection is opened again.
        conn._create_connection = _connector(sock, addr, port, timeout)
        try:
            # The TLS handshake now: an edge that is stopping closes connections it has not begun to serve, and a
            # connection closed before any request was written on it is safe to make to the next node.
            conn.connect()
        except OSError as e:  # ssl.SSLError included
            conn.close()
            errors.append(f"{addr}: {type(e).__name__} before any request")
            continue
        return conn, addr
    raise NoTarget(f"no node accepted a connection: {', '.join(errors)}")


def _connector(sock, addr, port, timeout):
    made = [sock]

    def create(*_args, **_kwargs):
        if made:
            return made.pop()
        s = socket.create_connection((addr, port), timeout=CONNECT_TIMEOUT)
        s.settimeout(timeout)
        return s

    return create


def request(port, method, path, body=None, headers=None, host=None, timeout=40.0, tls=None):
    """One HTTP/1.1 request to 127.0.0.1:port (or TARGETS[port]) with full control of the Host header; HTTPS when
    the port is in TLS_PORTS (or `tls` is an SSLContext). Never raises."""
    h = {"Host": host if host is not None else f"localhost:{port}"}
    h.update(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    started = time.monotonic()
    try:
        conn, _ = open_connection(port, timeout, tls)
    except OSError as e:
        return Resp(error=f"{type(e).__name__}: {e}", elapsed=time.monotonic() - started)
    try:
        try:
            conn.request(method, path, body=body, headers=h)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) before the whole body is sent: read that answer below
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data, elapsed=time.monotonic() - started,
                    raw_headers=r.getheaders())
    except (OSError, http.client.HTTPException) as e:
        return Resp(error=f"{type(e).__name__}: {e}", elapsed=time.monotonic() - started)
    finally:
        conn.close()


_contexts = {}


def tls_context(ca_file=None):
    """An SSLContext trusting only ca_file (default CA_FILE), made once per file."""
    ca_file = ca_file or CA_FILE
    if ca_file not in _contexts:
        _contexts[ca_file] = ssl.create_default_context(cafile=ca_file)
    return _contexts[ca_file]


def security_headers():
    """{name: value} of the app's security headers, read from src/http/security_headers.rs (the one list)."""
    src = open(os.path.join(REPO, "src", "http", "security_headers.rs")).read()
    body = src[src.index("SECURITY_HEADERS"):]
    body = body[:body.index("];")]
    pairs = re.findall(r'\(\s*"([^"]+)",\s*"((?:[^"\\]|\\.)*)"\s*,?\s*\)', body, re.S)
    # A `\` at the end of a line in a Rust string skips the newline and the next line's indentation.
    return {name: re.sub(r"\\\n\s*", "", value) for name, value in pairs}


def headers_once(r, expected):
    """The names of `expected` ({name: value or None}) that `r` does not carry exactly once (with that value)."""
    bad = []
    for name, value in expected.items():
        got = r.header_values(name)
        if len(got) != 1 or (value is not None and got[0] != value):
            bad.append(f"{name} x{len(got)}" + (f" {got}" if got and value is not None and got[0] != value else ""))
    return bad


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


def wait_serving(port, timeout=120.0, in_a_row=10):
    """Until /readyz answers 200 `in_a_row` times running: after app replicas restart, each httpd replica finds
    them again on its own next DNS lookup (a few seconds), and one 200 may come through the one that already has."""
    deadline, ok = time.monotonic() + timeout, 0
    while ok < in_a_row and time.monotonic() < deadline:
        ok = ok + 1 if request(port, "GET", "/readyz", timeout=5).status == 200 else 0
        if not ok:
            time.sleep(0.2)
    return ok >= in_a_row


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


def run(cmd, timeout=600, env=None, check_rc=False):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return p


def compose_env(extra=None):
    env = dict(ENV)
    for name in ("STATIC_DIR", "TEMPLATE_DIR"):  # compose/dev.yml passes these through from the shell
        env.pop(name, None)
    env.update(extra or {})
    return env


# The live stack's domain in the suite (besides localhost), and the HSTS a real domain would set.
TEST_DOMAIN = "docker-sample.test"
HSTS_VALUE = "max-age=63072000; includeSubDomains"


def live_env_file():
    """env/live.env as a user edits it for a domain: TEST_DOMAIN added to ALLOWED_HOSTS, HSTS on. Given to the
    stack as LIVE_ENV_FILE: the same images serve it, nothing rebuilt."""
    path = os.path.join(os.path.dirname(LOG_DIR), "live.env")
    if not os.path.exists(path):
        out = []
        for line in open(os.path.join(REPO, "env", "live.env")).read().splitlines():
            if line.startswith("ALLOWED_HOSTS="):
                line += "," + TEST_DOMAIN
            elif line.startswith("HSTS="):
                line = "HSTS=" + HSTS_VALUE
            out.append(line)
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")
    return path


def live_env(extra=None):
    """What the suite's live stack runs with: its ports, secrets and env file; a rate limit far above the load the
    suite makes from one address (the rate-limit check lowers it on purpose)."""
    env = {"APP_VERSION": TAG, "SECRETS_DIR": SECRETS_DIR, "LIVE_HTTPS_PORT": str(LIVE_PORT),
           "LIVE_HTTP_PORT": str(LIVE_HTTP_PORT), "LIVE_ENV_FILE": live_env_file(),
           "RATE_LIMIT_TASKS": "2000r/s", "RATE_LIMIT_BURST": "2000"}
    env.update(extra or {})
    return compose_env(env)


class Stack:
    def __init__(self, project, file, env):
        self.project, self.file, self.env = project, file, env

    def compose(self, *args, timeout=600, env_extra=None):
        env = dict(self.env)
        env.update(env_extra or {})
        return run(["docker", "compose", "-p", self.project, "-f", self.file, *args], timeout=timeout, env=env)

    def exec(self, service, *cmd, timeout=120):
        """`docker exec` in the service's first running container. Not `docker compose exec`: against a Docker 20.10
        engine (Debian's), Compose 2.40 exits 0 whatever the command's status."""
        ids = self.containers(service, all_=False)
        if not ids:
            raise RuntimeError(f"no running container for service {service}")
        return run(["docker", "exec", ids[0], *cmd], timeout=timeout)

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

    def follow_logs(self, label):
        """Every container's log from now on, removed replicas' included, into LOG_DIR/label.log; stop() it."""
        out = open(os.path.join(LOG_DIR, f"{label}.log"), "w")
        cmd = ["docker", "compose", "-p", self.project, "-f", self.file, "logs", "--follow", "--no-color", "--timestamps"]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)

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


def describe_failure(kind, r, at):
    """One line about a failed request: when, what, and who answered (httpd adds X-Request-Id, the edge does not)."""
    if not r.status:
        return f"{at:.1f}s {kind} conn-error {r.error}"
    who = "httpd" if r.header_values("x-request-id") else "edge"
    return f"{at:.1f}s {kind} {r.status} by {who}: {r.body[:90]!r}"


class Load:
    """Background request loop: GET /api/tasks?limit=5 (needs the database) and POST wordcount tasks."""

    def __init__(self, port, threads=3, post_every=3):
        self.port, self.threads, self.post_every = port, threads, post_every
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples = []  # (t, status or error)
        self.failures = []  # describe_failure() of each 5xx or connection error
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
                if not r.status or r.status >= 500:
                    self.failures.append(describe_failure("post" if i % self.post_every == 0 else "get", r,
                                                          time.monotonic() - T0))
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


def manifest_names():
    with open(os.path.join(STATIC_DIR, "manifest.json")) as f:
        paths = json.load(f)["paths"]
    css = [k for k in paths if k.endswith(".css")]
    plain = css[0] if css else sorted(paths)[0]
    return plain, paths[plain]


def read_secrets():
    out = {}
    for name in ("postgres_password", "redis_password", "secret_key"):
        with open(os.path.join(SECRETS_DIR, name)) as f:
            out[name] = f.read().strip()
    return out
