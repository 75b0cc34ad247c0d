"""ACME: the live stack with the `acme` profile (compose/live.yml's acme service, acme/acme.sh in the lego stand-in)
against pebble, the ACME test CA, on the stack's frontend network. The domain resolves to the edge through a
network alias; pebble validates http-01 for real on the edge's HTTP port. Checked: the first certificate is issued
and served (issued by pebble's intermediate, for the domain), the acme service's hardening and file modes, its
healthcheck; then a renewal forced while clients hit HTTPS (keep-alive and new connections, GET /, a static file,
GET /api/tasks?limit=5, POST /api/tasks): the new certificate (new serial) is served and no request fails.

Everything it makes (the stack with pebble, its volumes, an env file, a compose override, pebble's CA file) is
removed at its end, also on failure. Test-only settings live in the override this phase writes, never in
compose/live.yml.

The HTTPS client is here, not in harness.py: it connects to 127.0.0.1 but speaks TLS for the domain (SNI and
certificate verification against pebble's root, which pebble makes anew at each start), and it reuses keep-alive
connections the way urllib3 and browsers do: a connection the server has closed is not reused (checked before
each request), and an idempotent request that finds its reused connection closed before any answer is sent again
on a new one (counted and reported); a POST is never resent.
"""

import calendar
import http.client
import os
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid

import harness
from harness import (
    LIVE_FILE,
    LIVE_PORT,
    LIVE_PROJECT,
    LOG_DIR,
    Stack,
    check,
    inspect,
    live_env,
    live_env_file,
    log,
    manifest_names,
    proc_uid,
    run,
)

DOMAIN = getattr(harness, "TEST_DOMAIN", "docker-sample.test")
HTTP_PORT = getattr(harness, "LIVE_HTTP_PORT", None)
PEBBLE_IMAGE = os.environ.get("PEBBLE_IMAGE", "docker-sample-test/pebble:2.4")
LEGO_IMAGE = os.environ.get("LEGO_IMAGE", "docker-sample-test/lego:4.9")
CA_IN_ACME = "/etc/acme-test/pebble-ca.pem"
ACME_SH = ["/bin/sh", "/etc/acme/acme.sh"]


# ---- HTTPS for DOMAIN on 127.0.0.1 ------------------------------------------------------------------------------

class DomainConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port as a client that resolved DOMAIN to this host: SNI and verification for DOMAIN."""

    def __init__(self, port, context, timeout=15.0):
        super().__init__(DOMAIN, port, timeout=timeout, context=context)
        self.connects = 0

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.connects += 1

    def serial(self):
        return (self.sock.getpeercert() or {}).get("serialNumber") if self.sock else None

    def issuer_cn(self):
        cert = (self.sock.getpeercert() or {}) if self.sock else {}
        for rdn in cert.get("issuer", ()):
            for k, v in rdn:
                if k == "commonName":
                    return v
        return None

    def dropped(self):
        """The server closed it (or sent something unasked): readable while no request is out."""
        if self.sock is None:
            return True
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True


def https(port, ctx, method, path, body=None, conn=None, keep=False, timeout=15.0, key=None):
    """One request to DOMAIN. keep=True: on `conn` (made when None), kept open for the next request and reused
    unless the server has closed it; else on a connection of its own. `key`: its Idempotency-Key. Returns
    (status or None, error or None, the serial served, retried, conn)."""
    headers = {"Host": f"{DOMAIN}:{port}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if key:
        headers["Idempotency-Key"] = key
    retried = False
    for attempt in (1, 2):
        if conn is not None and conn.sock is not None and conn.dropped():
            conn.close()
        if conn is None:
            conn = DomainConnection(port, ctx, timeout)
        reused = conn.sock is not None
        try:
            conn.request(method, path, body=body, headers=headers)
            serial = conn.serial()  # now: http.client drops the socket after an answer that closes it
            r = conn.getresponse()
            r.read()
            status = r.status
            if not keep:
                conn.close()
                conn = None
            return status, None, serial, retried, conn
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            conn.close()
            # The server closed a kept-alive connection as we sent on it (nginx's old workers close idle ones on
            # a reload): a GET goes again on a new connection, as a browser would, and so does a POST with an
            # Idempotency-Key (the app answers a repeat with the first one's task); a POST without one does not.
            if reused and (method == "GET" or key) and attempt == 1:
                retried = True
                continue
            return None, f"{type(e).__name__}: {e}", None, retried, conn if keep else None
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            conn.close()
            return None, f"{type(e).__name__}: {e}", None, retried, conn if keep else None
    return None, "unreachable", None, retried, conn if keep else None


def pebble_get(mgmt_port, path, ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", mgmt_port, timeout=10, context=ctx)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read().decode()
        return body if r.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def subject_cn(pem, tmpdir):
    path = os.path.join(tmpdir, f"cert-{uuid.uuid4().hex[:8]}.pem")
    with open(path, "w") as f:
        f.write(pem)
    p = run(["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline", "-in", path])
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("commonName"):
            return line.split("=", 1)[1].strip()
    return None


# ---- the load during the renewal --------------------------------------------------------------------------------

class HttpsLoad:
    """Clients on DOMAIN: `keepalive` threads on one connection each, `fresh` threads with a new connection per
    request; each runs GET /, GET a static file, GET /api/tasks?limit=5, POST /api/tasks in turn. A watcher opens a
    new connection every 0.1 s and records the serial served."""

    def __init__(self, port, ctx, static_path, keepalive=2, fresh=2):
        self.port, self.ctx, self.static = port, ctx, static_path
        self.keepalive, self.fresh = keepalive, fresh
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}      # kind -> requests
        self.failures = []    # one line each
        self.retried = 0      # GETs and keyed POSTs sent again after the server closed a kept-alive connection
        self.reopened = 0     # keep-alive clients' connections opened after their first
        self.keep_serial = {}  # keep-alive client -> the serial of its last answer
        self.serials = []     # (t, serial) seen by the watcher
        self.threads = []

    def _record(self, kind, status, err, want, retried):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.retried += 1 if retried else 0
            if status != want:
                self.failures.append(f"{time.monotonic() - harness.T0:.1f}s {kind}: "
                                     + (err or f"status {status}"))

    def _client(self, n, keep):
        conn = None
        i = 0
        steps = [("GET /", "GET", "/", None, 200), ("GET static", "GET", self.static, None, 200),
                 ("GET /api/tasks", "GET", "/api/tasks?limit=5", None, 200),
                 ("POST /api/tasks", "POST", "/api/tasks",
                  lambda: ('{"kind":"wordcount","payload":{"text":"acme renewal %d %d"}}' % (n, i)).encode(), 202)]
        while not self.stop.is_set():
            for kind, method, path, body, want in steps:
                if self.stop.is_set():
                    break
                i += 1
                # Each POST with its own Idempotency-Key, as the README asks of API clients.
                key = f"acme-{keep}-{n}-{i}" if method == "POST" else None
                status, err, serial, retried, c = https(self.port, self.ctx, method, path,
                                                        body=body() if body else None, conn=conn, keep=keep, key=key)
                if keep:
                    conn = c
                    if serial:
                        with self.lock:
                            self.keep_serial[n] = serial
                self._record(("keep-alive " if keep else "new-conn ") + kind, status, err, want, retried)
                time.sleep(0.02)
        if conn is not None:
            with self.lock:
                self.reopened += max(0, conn.connects - 1)
            conn.close()

    def _watch(self):
        while not self.stop.is_set():
            status, _, serial, _, _ = https(self.port, self.ctx, "GET", "/healthz")
            if serial:
                with self.lock:
                    self.serials.append((time.monotonic(), serial))
            time.sleep(0.1)

    def served_since(self, t, serial):
        """When the watcher first saw `serial` at or after t (None if not yet)."""
        with self.lock:
            for ts, s in self.serials:
                if ts >= t and s == serial:
                    return ts
        return None

    def latest_serial(self):
        with self.lock:
            return self.serials[-1][1] if self.serials else None

    def __enter__(self):
        for n in range(self.keepalive + self.fresh):
            t = threading.Thread(target=self._client, args=(n, n < self.keepalive), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._watch, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


# ---- the phase --------------------------------------------------------------------------------------------------

class AcmeStack(Stack):
    """The live stack plus this phase's override file (pebble, the domain's alias, the CA file for lego)."""

    def __init__(self, env, override):
        super().__init__(LIVE_PROJECT, LIVE_FILE, env)
        self.override = override

    def compose(self, *args, timeout=600, env_extra=None):
        env = dict(self.env)
        env.update(env_extra or {})
        return run(["docker", "compose", "-p", self.project, "-f", self.file, "-f", self.override, *args],
                   timeout=timeout, env=env)


def write_env_file(path):
    """The suite's live env file (the domain in ALLOWED_HOSTS) with ACME on, as acme/README.md says to set it.
    ACME_DOMAINS is left unset: the domain comes from ALLOWED_HOSTS."""
    acme = {"TLS_ACME": "true", "TLS_CERT_FILE": "/srv/acme/tls/cert.pem", "TLS_KEY_FILE": "/srv/acme/tls/key.pem",
            "ACME_EMAIL": f"ops@{DOMAIN}", "ACME_SERVER": "https://pebble:14000/dir",
            "LEGO_CA_CERTIFICATES": CA_IN_ACME}
    out = [ln for ln in open(live_env_file()).read().splitlines() if ln.split("=", 1)[0] not in acme]
    out += [f"{k}={v}" for k, v in acme.items()]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def write_override(path, ca_file):
    with open(path, "w") as f:
        f.write(f"""# Written by tests/e2e/phase_acme.py: test-only additions to compose/live.yml.
services:
  edge-ports:                     # the edge's network namespace (compose/live.yml)
    networks:
      frontend:
        aliases: [{DOMAIN}]        # what DNS does for a real domain: the name leads to the edge
  acme:
    volumes:
      - {ca_file}:{CA_IN_ACME}:ro  # pebble's HTTPS certificate, for LEGO_CA_CERTIFICATES
  pebble:
    image: {PEBBLE_IMAGE}
    networks: [frontend]
    ports: ["127.0.0.1::15000"]   # its management API (roots, intermediates), for this test's client
    read_only: true
    cap_drop: [ALL]
    security_opt: ["no-new-privileges:true"]
""")


def extract_pebble_ca(dest):
    cid = run(["docker", "create", PEBBLE_IMAGE], check_rc=True).stdout.strip()
    try:
        run(["docker", "cp", f"{cid}:/etc/pebble/cert.pem", dest], check_rc=True)
    finally:
        run(["docker", "rm", "-f", cid])
    os.chmod(dest, 0o644)


def wait_health(cid, want="healthy", timeout=120.0):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = ((inspect(cid)["State"].get("Health") or {}).get("Status"))
        if status == want:
            return status
        time.sleep(1)
    return status


def started_monotonic(cid):
    """The container's start as a time.monotonic() value (the engine's clock is this host's)."""
    started = inspect(cid)["State"]["StartedAt"]  # 2026-01-01T12:00:00.123456789Z
    base, frac = started.rstrip("Z").split(".") if "." in started else (started.rstrip("Z"), "0")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)
    return time.monotonic() - (time.time() - t)


def acme_hardening(stack):
    cid = stack.container("acme")
    i = inspect(cid)
    user = (i["Config"].get("User") or "").strip()
    uid = proc_uid(i["State"].get("Pid") or 0)
    hc = (i["Config"].get("Healthcheck") or {}).get("Test") or []
    ok = (user == "1001:1000" and uid == 1001 and i["HostConfig"].get("ReadonlyRootfs")
          and "ALL" in [c.upper() for c in (i["HostConfig"].get("CapDrop") or [])]
          and any("no-new-privileges" in s for s in (i["HostConfig"].get("SecurityOpt") or []))
          and i["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped" and "check" in hc
          and not (i["HostConfig"].get("PortBindings") or {}))
    check("acme: the service runs as 1001:1000 (process uid too), read-only, cap_drop ALL, no-new-privileges, "
          "restart policy, healthcheck, no published port", bool(ok),
          f"user={user!r} uid={uid} ro={i['HostConfig'].get('ReadonlyRootfs')} healthcheck={hc}")
    p = stack.exec("acme", "ls", "-lnd", "/srv/acme", "/srv/acme/lego", "/srv/acme/webroot", "/srv/acme/tls",
                   "/srv/acme/tls/cert.pem", "/srv/acme/tls/key.pem")
    modes = {ln.split()[-1]: (ln.split()[0], ln.split()[2], ln.split()[3]) for ln in p.stdout.splitlines() if ln}
    want = {"/srv/acme/lego": ("drwx------", "1001", "1000"), "/srv/acme/tls": ("drwxr-x---", "1001", "1000"),
            "/srv/acme/tls/key.pem": ("-rw-r-----", "1001", "1000"),
            "/srv/acme/tls/cert.pem": ("-rw-r--r--", "1001", "1000"),
            "/srv/acme/webroot": ("drwxr-xr-x", "1001", "1000"), "/srv/acme": ("drwxrwxrwt", "0", "0")}
    bad = {k: modes.get(k) for k, v in want.items() if modes.get(k) != v}
    check("acme: the volume's modes: lego/ 0700 (account and keys: acme only), tls/ 0750 and key.pem 0640 "
          "(group 1000: the edge), the volume's root 1777 (from the image's /var/tmp)", not bad,
          f"wrong: {bad}" if bad else "")


def phase_acme():
    work = tempfile.mkdtemp(prefix="acme-", dir=os.path.dirname(LOG_DIR))
    ca_file = os.path.join(work, "pebble-ca.pem")
    env_file = os.path.join(work, "acme.env")
    override = os.path.join(work, "acme-override.yml")
    stack = None
    try:
        extract_pebble_ca(ca_file)
        write_env_file(env_file)
        write_override(override, ca_file)
        env = live_env({"LIVE_ENV_FILE": env_file, "COMPOSE_PROFILES": "acme", "LEGO_IMAGE": LEGO_IMAGE})
        stack = AcmeStack(env, override)
        run_phase(stack, work, ca_file)
    finally:
        if stack is not None:
            try:
                path = stack.save_logs("acme")
                log(f"acme: logs saved to {path}")
            except Exception as e:  # the logs are a help, not a check
                log(f"acme: could not save the logs: {e}")
            p = stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180)
            left = stack.containers() + [v for v in run(["docker", "volume", "ls", "-q", "--filter",
                                                         f"label=com.docker.compose.project={LIVE_PROJECT}"]).stdout.split()]
            check("acme: `down --volumes` removes the stack, pebble and the volumes (live-acme too)",
                  p.returncode == 0 and not left, p.stderr.strip()[-300:] if p.returncode else f"left: {left}")
        shutil.rmtree(work, ignore_errors=True)


def run_phase(stack, work, ca_file):
    port = LIVE_PORT
    log(f"acme: live stack with COMPOSE_PROFILES=acme and pebble (project {LIVE_PROJECT}, https {port}, "
        f"domain {DOMAIN})")
    t0 = time.monotonic()
    p = stack.compose("up", "--detach", timeout=300)
    if not check("acme: `up --detach` starts the stack with the acme service and pebble", p.returncode == 0,
                 f"{time.monotonic() - t0:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:]):
        return
    acme_cid = stack.container("acme")
    acme_started = started_monotonic(acme_cid)

    # pebble's root (made anew at each start) is the only trust anchor of the client.
    mgmt = stack.compose("port", "pebble", "15000").stdout.strip().rsplit(":", 1)[-1]
    root = intermediate = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (root and intermediate):
        root = pebble_get(mgmt, "/roots/0", ca_file)
        intermediate = pebble_get(mgmt, "/intermediates/0", ca_file)
        if not (root and intermediate):
            time.sleep(0.5)
    if not check("acme: pebble's management API gives its root and intermediate", bool(root and intermediate)):
        return
    ctx = ssl.create_default_context(cadata=root)
    inter_cn = subject_cn(intermediate, work)

    p = stack.exec("acme", *ACME_SH, "domains")
    check(f"acme: the domain comes from ALLOWED_HOSTS (ACME_DOMAINS unset): {DOMAIN}",
          p.returncode == 0 and p.stdout.split() == [DOMAIN], (p.stdout + p.stderr).strip())

    # The first certificate: until it is there the edge refuses TLS handshakes. Three answers in a row on new
    # connections: for a moment after the reload that loads it, an old nginx worker (ssl_reject_handshake) can
    # still take a new connection from its own `reuseport` socket.
    first = None
    last = None
    in_a_row = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status, err, serial, _, _ = https(port, ctx, "GET", "/readyz", timeout=5)
        last = (status, err)
        in_a_row = in_a_row + 1 if status == 200 else 0
        if in_a_row == 1:
            first = time.monotonic()
        if in_a_row == 3:
            break
        time.sleep(0.25)
    first = first if in_a_row == 3 else None
    if not check(f"acme: the certificate is issued and served: https://{DOMAIN}/readyz is 200, verified against "
                 "pebble's root", first is not None, f"last: {last}"):
        return
    log(f"FIGURE acme: first HTTPS answer {first - t0:.1f} s after `up` began "
        f"({first - acme_started:.1f} s after the acme container started: account, order, http-01, issue, publish, "
        "the edge's reload)")
    c = DomainConnection(port, ctx)
    c.connect()
    serial1, issuer = c.serial(), c.issuer_cn()
    c.close()
    check("acme: the served certificate's issuer is pebble's intermediate", issuer and issuer == inter_cn,
          f"issuer {issuer!r}, pebble's intermediate {inter_cn!r}, serial {serial1}")

    if HTTP_PORT:
        r = harness.request(HTTP_PORT, "GET", "/.well-known/acme-challenge/no-such-token", host=DOMAIN, tls=False)
        check("acme: HTTP serves /.well-known/acme-challenge/ from the webroot (a missing token is 404, no redirect)",
              r.status == 404, repr(r))

    health = wait_health(acme_cid, timeout=90)
    p = stack.exec("acme", *ACME_SH, "check")
    check("acme: the acme service is healthy (`acme.sh check`: a published certificate for the domain, far from "
          "expiry)", health == "healthy" and p.returncode == 0, f"health={health}; {(p.stdout + p.stderr).strip()}")
    acme_hardening(stack)

    # ---- renewal under load ------------------------------------------------------------------------------------
    _, hashed = manifest_names()
    with HttpsLoad(port, ctx, f"/static/{hashed}") as load:
        time.sleep(3)
        before = load.latest_serial() or serial1
        t_renew = time.monotonic()
        p = stack.exec("acme", *ACME_SH, "renew", "--force", timeout=180)
        t_published = time.monotonic()
        said = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("acme:") or "error" in ln.lower()]
        renewed = check("acme: `acme.sh renew --force` (docker exec) renews and publishes",
                        p.returncode == 0 and "published" in p.stdout, " / ".join(said)[-600:])
        new_serial = None
        deadline = time.monotonic() + 60
        while renewed and time.monotonic() < deadline:
            s = load.latest_serial()
            if s and s != before:
                new_serial = s
                break
            time.sleep(0.1)
        t_served = load.served_since(t_renew, new_serial) if new_serial else None
        time.sleep(3)  # the load goes on a while with the new certificate
    check("acme: the renewed certificate (new serial) is served", new_serial is not None and new_serial != serial1,
          f"serial before {before}, after {new_serial}")
    c = DomainConnection(port, ctx)
    c.connect()
    issuer2 = c.issuer_cn()
    c.close()
    check("acme: the renewed certificate is also issued by pebble's intermediate", issuer2 == inter_cn, f"{issuer2!r}")
    check("acme: the keep-alive clients moved to the new certificate (nginx's old workers closed their connections)",
          new_serial is not None and set(load.keep_serial.values()) == {new_serial},
          f"last serials {load.keep_serial}, reconnections {load.reopened}")
    total = sum(load.counts.values())
    check(f"acme: no failed request during the renewal ({total} requests: keep-alive and new connections, GET /, "
          "a static file, GET /api/tasks, POST /api/tasks)", total > 0 and not load.failures,
          f"{len(load.failures)} failed: {load.failures[:5]}" if load.failures else
          f"{load.retried} GETs and keyed POSTs sent again after the server closed a kept-alive connection")
    log(f"FIGURE acme renewal under load: {total} requests, {len(load.failures)} failed; keep-alive clients "
        f"reconnected {load.reopened} times (the reload's old workers close their connections), {load.retried} "
        f"GETs and keyed POSTs resent after finding a kept-alive connection closed; by kind: "
        + ", ".join(f"{k} {v}" for k, v in sorted(load.counts.items())))
    if t_served:
        log(f"FIGURE acme renewal: `acme.sh renew --force` {t_published - t_renew:.1f} s (lego: order, "
            f"authorization, issue, publish), new certificate served {t_served - t_renew:.1f} s after the renewal "
            f"began ({t_served - t_published:.1f} s after it was published: httpd-start's poll and nginx's reload)")
    p = stack.exec("acme", *ACME_SH, "check")
    check("acme: `acme.sh check` passes after the renewal", p.returncode == 0, (p.stdout + p.stderr).strip())
