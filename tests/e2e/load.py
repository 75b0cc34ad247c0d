"""Constant load the way real clients make it: kept-alive connections, hundreds of requests per second, the mix of
a page view (/, a hashed static file, GET /api/tasks/{id}, POST /api/tasks, every second one with an
Idempotency-Key)."""

import http.client
import json
import ssl
import threading
import time
import uuid

from harness import T0, TARGETS, Resp, describe_failure, manifest_names, mark_down, open_connection

KINDS = ("page", "static", "get", "post")
# A connection closed by the server with no byte of an answer: on a kept-alive connection, the server closed it as
# idle while the request was on its way (over TLS, an EOF without close_notify). Browsers send the request again on
# a new connection in that case, whatever its method (Chromium: HttpNetworkTransaction::ShouldResendRequest).
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError,
         ssl.SSLZeroReturnError)


def p99(latencies):
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class KeepAliveLoad:
    """`clients` threads, each with one kept-alive connection to 127.0.0.1:port (HTTPS on a TLS port), together
    `rate` requests/s. A connection the server closes (`Connection: close`, or closed between two requests) is
    opened again; a request that met a connection already closed, before any answer, is sent again once on a new
    one, as browsers do (safe for the POSTs too: each has an Idempotency-Key, its own or the edge's). A 5xx, or a connection
    error on a new connection, is a failure."""

    def __init__(self, port, known_task=None, clients=16, rate=350, unkeyed=True):
        _, hashed = manifest_names()
        self.port, self.clients, self.interval = port, clients, clients / rate
        self.static = f"/static/{hashed}"
        self.marker = f"load-{uuid.uuid4().hex[:12]}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples = []  # (start, kind, status or "conn-error", seconds)
        self.failures = []  # describe_failure() of each failed request, to tell who answered
        self.accepted = [known_task] if known_task else []
        self.windows = []  # (label, start, end) of each switch
        self.resent = 0
        # With several addresses (harness.TARGETS: nodes behind a load balancer), a request that was sent to a node
        # and got no answer (its node died, its connection was reset or timed out) is sent once more to the next
        # node when that is safe: a GET (as a load balancer does for an idempotent request) or a POST with an
        # Idempotency-Key (as the README tells API clients to do). Counted here, with why; an unkeyed POST that
        # meets that fails.
        self.balanced = len(TARGETS.get(port, [])) > 1
        self.sent_again = []
        self.entered = {}  # address -> requests answered through it
        # Every second POST without an Idempotency-Key, what a client that never heard of keys sends (the edge gives
        # it one); unkeyed=False: all with one.
        self.unkeyed = unkeyed
        self.threads = []

    def _connect(self):
        conn, addr = open_connection(self.port, timeout=5 if self.balanced else 20)
        conn.addr = addr
        return conn

    def _request(self, kind, n, i):
        # Our own request id (httpd and the app log it): a failure's id finds its lines in the saved logs.
        headers = {"Host": f"localhost:{self.port}", "X-Request-Id": f"{self.marker}-{n}-{i}"}
        if kind == "post":
            body = json.dumps({"kind": "wordcount", "payload": {"text": f"{self.marker} {n} {i}"}}).encode()
            headers["Content-Type"] = "application/json"
            if not (self.unkeyed and (i // len(KINDS)) % 2):
                headers["Idempotency-Key"] = f"{self.marker}-{n}-{i}"
            return "POST", "/api/tasks", body, headers
        if kind == "get":
            with self.lock:
                tid = self.accepted[-1] if self.accepted else None
            return "GET", f"/api/tasks/{tid}" if tid else "/readyz", None, headers
        return "GET", "/" if kind == "page" else self.static, None, headers

    def _exchange(self, conn, method, path, body, headers):
        """(connection to keep or None, Resp)."""
        retry_safe = method == "GET" or "Idempotency-Key" in headers
        for attempt in range(2):
            reused = conn is not None
            try:
                conn = conn or self._connect()
            except OSError as e:  # no node accepted a connection: nothing was sent
                return None, Resp(error=f"{type(e).__name__}: {e}")
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data, raw_headers=r.getheaders())
                with self.lock:
                    self.entered[conn.addr] = self.entered.get(conn.addr, 0) + 1
                if resp.headers.get("connection", "").lower() == "close":
                    conn.close()
                    if self.balanced:
                        mark_down(conn.addr)
                    conn = None
                return conn, resp
            except STALE as e:
                conn.close()
                if self.balanced and reused:
                    mark_down(conn.addr)
                if not reused and not (self.balanced and retry_safe and attempt == 0):
                    return None, Resp(error=f"{type(e).__name__}: {e} (via {conn.addr}, a new connection)")
                with self.lock:
                    self.resent += 1
                    if not reused:
                        self.sent_again.append(f"{method} via {conn.addr}: {type(e).__name__}")
                conn = None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if not (self.balanced and retry_safe and attempt == 0):
                    how = "a kept-alive connection" if reused else "a new connection"
                    return None, Resp(error=f"{type(e).__name__}: {e} (via {conn.addr}, {how})")
                with self.lock:
                    self.sent_again.append(f"{method} via {conn.addr}: {type(e).__name__}")
                conn = None
        return None, Resp(error="closed twice")

    def _loop(self, n):
        conn, i = None, n
        next_at = time.monotonic()
        while not self.stop.is_set():
            kind = KINDS[i % len(KINDS)]
            started = time.monotonic()
            request = self._request(kind, n, i)
            conn, r = self._exchange(conn, *request)
            took = time.monotonic() - started
            with self.lock:
                self.samples.append((started, kind, r.status or "conn-error", took))
                if kind == "post" and r.status == 202 and r.json():
                    self.accepted.append(r.json()["id"])
                if not r.status or r.status >= 500:
                    keyed = "keyed" if "Idempotency-Key" in request[3] else "unkeyed"
                    self.failures.append(f"{describe_failure(kind, r, started - T0)} [{request[3]['X-Request-Id']}, "
                                         f"{keyed if kind == 'post' else kind}]")
            i += self.clients
            # Pacing to the rate (a request schedule, not a wait for a condition).
            next_at = max(next_at + self.interval, time.monotonic() - 1)
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        if conn:
            conn.close()

    def __enter__(self):
        self.started = time.monotonic()
        for n in range(self.clients):
            t = threading.Thread(target=self._loop, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.ended = time.monotonic()

    def switch(self, label):
        """A context marking the span of one switch (a deploy, a rollback), for the p99 during switches."""
        load = self

        class Span:
            def __enter__(self):
                self.t = time.monotonic()

            def __exit__(self, *exc):
                with load.lock:
                    load.windows.append((label, self.t, time.monotonic()))

        return Span()

    def counts(self):
        with self.lock:
            samples = list(self.samples)
        failed = [f"{k} {s}" for _, k, s, _ in samples if s == "conn-error" or (isinstance(s, int) and s >= 500)]
        other = [s for _, _, s, _ in samples if isinstance(s, int) and s not in (200, 202) and s < 500]
        return len(samples), failed, other

    def figures(self):
        """Requests/s over the whole run, and p99 (ms) before the first switch and during the switches."""
        with self.lock:
            samples, windows = list(self.samples), list(self.windows)
        seconds = max(1e-6, getattr(self, "ended", time.monotonic()) - self.started)
        first = min((w[1] for w in windows), default=float("inf"))
        during = [s for s in samples if any(a <= s[0] <= b for _, a, b in windows)]
        before = [s[3] for s in samples if s[0] < first]
        return {"rate": len(samples) / seconds, "clients": self.clients, "p99_before_ms": p99(before),
                "p99_during_ms": p99([s[3] for s in during]), "during": len(during), "resent": self.resent,
                "entered": dict(self.entered), "sent_again": list(self.sent_again)}


    def window(self, label):
        """Requests that started during the switch `label`: (count, failed, slowest in ms, resent is global)."""
        with self.lock:
            spans = [(a, b) for name, a, b in self.windows if name == label]
            inside = [s for s in self.samples if any(a <= s[0] <= b for a, b in spans)]
        failed = [s for s in inside if s[2] == "conn-error" or (isinstance(s[2], int) and s[2] >= 500)]
        return len(inside), len(failed), max((s[3] for s in inside), default=0.0) * 1000


def finished(port, ids, timeout):
    """{id: the task's JSON once done or dead, else None}, asked over one kept-alive connection (thousands of ids in
    seconds), each with a long poll until it finishes or `timeout` runs out."""
    deadline = time.monotonic() + timeout
    conn, result = None, {}
    for tid in ids:
        task = None
        while time.monotonic() < deadline:
            wait = max(1, min(25, int(deadline - time.monotonic())))
            try:
                conn = conn or open_connection(port, timeout=40)[0]
                conn.request("GET", f"/api/tasks/{tid}?wait={wait}", headers={"Host": f"localhost:{port}"})
                r = conn.getresponse()
                body = r.read()
                task = json.loads(body) if r.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                if conn:
                    conn.close()
                conn, task = None, None
            if task and task.get("state") in ("done", "dead"):
                break
            # A retry after a failed poll, not a wait for a condition (the long poll is that).
            time.sleep(0.2)
        result[tid] = task
    if conn:
        conn.close()
    return result
