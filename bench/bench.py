#!/usr/bin/env python3
"""The benchmark harness; run it through bench/run.sh. Python 3 standard library only.

It starts everything itself, on 127.0.0.1 with free ports, in one temporary directory removed at exit:
PostgreSQL 15 (initdb; as a non-root user when run as root), Redis (append-only, fsync every second, as the live
compose file), `app migrate`, `app collectstatic`, the release `app serve` and `app tasks`, and Debian's nginx with
nix/nginx.conf (only the lines marked `# SUBST:` replaced). Then it measures, in this order:

  1. start-up: launch `app serve` (dependencies up) -> first 200 on /healthz, polled every 2 ms, median of runs;
  2. end-to-end tasks: N `wordcount` tasks POSTed through nginx by wrk while one worker runs, time until all are
     `done` in PostgreSQL (from the tasks' own finished_at); then the worker alone draining a backlog of N, with the
     default and a higher WORKER_CONCURRENCY;
  3. HTTP with wrk (2 threads, 64 connections, a warm-up before every row): a hashed static file through nginx (the
     ratio base, measured first and last), /healthz direct and through nginx, / , GET /api/tasks/{id} and
     POST /api/tasks through nginx; the app rows with the default RUST_LOG=info and again with RUST_LOG=warn;
  4. memory (VmRSS idle, VmHWM peak) of serve and tasks, and sizes (release binary, stand-in app image).

Every process it starts is stopped at exit (also on errors, Ctrl-C, SIGTERM and the --max-seconds alarm).
"""

import argparse
import ctypes
import datetime
import http.client
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
MIB = 1024 * 1024
POST_BODY = '{"kind":"wordcount","payload":{"text":"a b a"}}'

TARGETS = {
    "healthz_ratio": 0.40,
    "root_ratio": 0.15,
    "root_p99_ms": 50.0,
    "serve_idle_mib": 20.0,
    "serve_peak_mib": 60.0,
    "tasks_idle_mib": 20.0,
    "startup_ms": 150.0,
    "tasks_per_s": 1000.0,
}


class HarnessError(Exception):
    """The harness could not do its job (as opposed to a target being missed)."""


class Stop(BaseException):
    """A signal or the time limit: unwind, clean up, exit 1."""


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---- processes -------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # Own process group (stopped as a group), and killed if the harness dies without cleaning up.
    os.setsid()
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (cleared by setpriv's uid change; those are stopped by pid)


class Services:
    """Every long-running process the harness started, stopped in reverse order."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []  # (name, Popen, stop signal)

    def start(self, name, argv, env, log_name=None, stdout=None, stop_signal=signal.SIGTERM, cwd=None):
        logf = open(os.path.join(self.tmp, "logs", log_name or f"{name}.log"), "ab")
        out = logf if stdout is None else stdout
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=logf,
                                preexec_fn=_child_setup, cwd=cwd or self.tmp)
        logf.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def stop(self, proc, timeout=15.0):
        for i, (name, p, sig) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                _stop(name, p, sig, timeout)
                return p.returncode
        return proc.returncode

    def stop_all(self):
        while self.procs:
            name, p, sig = self.procs.pop()
            _stop(name, p, sig, 15.0)


def _stop(name, proc, sig, timeout):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {timeout:.0f} s after {signal.Signals(sig).name}: killing it")
    # Whatever is left in its process group (nginx workers, postgres backends) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def run(argv, timeout, env=None, check=True, capture=True, cwd=None):
    try:
        res = subprocess.run(argv, env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if capture else None,
                             stderr=subprocess.PIPE if capture else None, text=True)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`{' '.join(argv[:4])}` did not finish within {timeout} s")
    if check and res.returncode != 0:
        detail = ((res.stderr or "") + (res.stdout or "")).strip()[-2000:]
        raise HarnessError(f"`{' '.join(argv[:4])}` exited {res.returncode}:\n{detail}")
    return res


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=2.0, host="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(what, probe, timeout, proc=None, logfile=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what}: the process exited with status {proc.returncode}{_tail(logfile)}")
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(0.05)
    raise HarnessError(f"{what}: not ready within {timeout} s ({last}){_tail(logfile)}")


def _tail(path, lines=15):
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        data = f.read()[-8000:].decode(errors="replace").splitlines()[-lines:]
    return "\n--- " + path + " (end) ---\n" + "\n".join(data)


# ---- /proc -----------------------------------------------------------------------------------------------------

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / CLK_TCK


def process_tree(root):
    """root and all its descendants (for postgres backends and nginx workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def busy_compilers():
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() in ("rustc", "cc", "cc1", "ld", "ld.lld", "mold", "nix-daemon"):
                        n += 1
            except OSError:
                pass
    return n


class RssSampler(threading.Thread):
    """Samples VmRSS of some pids every 100 ms (VmHWM is the kernel's own peak; this shows the shape)."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = dict(pids)
        self.max = {k: 0 for k in self.pids}
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for name, pid in self.pids.items():
                try:
                    self.max[name] = max(self.max[name], proc_status(pid).get("VmRSS", 0))
                except OSError:
                    pass
            self.halt.wait(0.1)


# ---- wrk -------------------------------------------------------------------------------------------------------

WRK_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,' ..
    '"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
'''

WRK_POST = '''
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
''' % POST_BODY

# A fixed number of requests: each thread stops after `limit` answers and leaves a marker file. wrk itself only
# ends after -d, so the harness sends it SIGINT (wrk then reports as usual) once every thread has its marker.
WRK_POST_COUNT = WRK_POST + '''
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end
local answered = 0
local limit = %d
local marker = "%s"
response = function(status, headers, body)
  answered = answered + 1
  if answered == limit then
    local f = io.open(marker .. thread_no, "w")
    if f then f:close() end
    wrk.thread:stop()
  end
end
'''


class Wrk:
    def __init__(self, tmp, threads, connections):
        self.tmp, self.threads, self.connections = tmp, threads, connections
        self.scripts = {}

    def script(self, name, body):
        path = os.path.join(self.tmp, f"wrk-{name}.lua")
        with open(path, "w") as f:
            f.write(body + WRK_DONE)
        return path

    def argv(self, url, seconds, script):
        return ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s", "--timeout", "5s",
                "-s", script, url]

    def run(self, url, seconds, script):
        res = run(self.argv(url, seconds, script), timeout=seconds + 60, check=False)
        return self.parse(url, res.returncode, res.stdout, res.stderr)

    def run_count(self, url, n, limit_s):
        """n POSTs (about: up to one in-flight request per connection more); returns (seconds, result)."""
        per_thread = max(1, n // self.threads)
        marker = os.path.join(self.tmp, f"wrk-done-{time.monotonic_ns()}-")
        script = self.script("post-count", WRK_POST_COUNT % (per_thread, marker))
        t0 = time.monotonic()
        proc = subprocess.Popen(self.argv(url, limit_s, script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_child_setup)
        try:
            while proc.poll() is None and time.monotonic() - t0 < limit_s + 30:
                if all(os.path.exists(f"{marker}{i}") for i in range(1, self.threads + 1)):
                    break
                time.sleep(0.002)
            elapsed = time.monotonic() - t0
            # The stopped threads leave up to one request per connection in flight. Closing the connections now
            # would cancel those requests in the app, possibly between the INSERT and the XADD of an enqueue
            # (such a task then waits for the worker's reconciler, 30 s). The kernel buffers their answers, so
            # waiting a moment lets them all finish before wrk is stopped.
            time.sleep(1.0)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return elapsed, self.parse(url, proc.returncode, out, err)

    def parse(self, url, returncode, stdout, stderr):
        m = re.search(r"^BENCHJSON (\{.*\})$", stdout, re.M)
        if returncode != 0 or not m:
            raise HarnessError(f"wrk {url} failed (status {returncode}):\n{stdout}\n{stderr}")
        r = json.loads(m.group(1))
        secs = r["duration_us"] / 1e6
        errors = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
        return {
            "requests": int(r["requests"]),
            "seconds": round(secs, 3),
            "rps": r["requests"] / secs if secs else 0.0,
            "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "mean_ms": r["mean_us"] / 1000,
            "errors": int(errors),
            "error_detail": {k: int(r[k]) for k in ("status", "connect", "read", "write", "timeout")},
        }


# ---- the stack -------------------------------------------------------------------------------------------------

class Stack:
    def __init__(self, args, tmp, services):
        self.args, self.tmp, self.svc = args, tmp, services
        self.binary = args.binary
        self.root = os.geteuid() == 0
        self.user = None
        if self.root:
            for candidate in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(candidate)
                    break
                except KeyError:
                    pass
            if self.user is None:
                raise HarnessError("running as root, but neither a `postgres` nor a `nobody` user exists to run "
                                   "PostgreSQL, Redis and nginx")
        self.secret = secrets.token_hex(24)
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.app_port = free_port()
        self.app_metrics = free_port()
        self.tasks_metrics = free_port()
        self.nginx_port = free_port()
        self.serve = self.tasks = self.nginx = self.postgres = self.redis = None
        self.serve_log = self.tasks_log = None
        self.profiler = Profiler(args.profile) if args.profile else None

    # -- helpers
    def as_user(self, argv):
        if not self.root:
            return argv
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups"] + argv

    def owned_dir(self, *parts, mode=0o700):
        path = os.path.join(self.tmp, *parts)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        if self.root:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def base_env(self):
        return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": self.tmp, "LANG": "C.UTF-8",
                "TZ": "UTC"}

    def app_env(self, rust_log="info", listen=None, metrics=None, **extra):
        env = self.base_env()
        env.update({
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.pg_port}/postgres",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SECRET_KEY": self.secret,
            "DEBUG": "false",
            "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "LISTEN_ADDR": f"127.0.0.1:{listen or self.app_port}",
            "METRICS_ADDR": f"127.0.0.1:{metrics or self.app_metrics}",
            "RUST_LOG": rust_log,
            "LOG_FORMAT": "json",
            "QUEUE_NAME": "bench",
            "DB_POOL_SIZE": str(self.args.db_pool_size),
            "WAIT_TIMEOUT": "5",
            "SHUTDOWN_TIMEOUT": "5",
        })
        env.update(dict(kv.split("=", 1) for kv in self.args.app_env))
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def psql(self, sql, timeout=30):
        res = run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                   "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d", "postgres", "-c", sql],
                  timeout=timeout, env=self.base_env())
        return res.stdout.strip()

    # -- dependencies
    def start_postgres(self):
        os.chmod(self.tmp, 0o755)
        data = self.owned_dir("pg")
        sock = self.owned_dir("pg-sock", mode=0o755)
        run(self.as_user([os.path.join(PG_BIN, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--locale=C", "-N"]), timeout=120, env=self.base_env())
        # Production defaults (fsync, synchronous_commit on), as the live compose file's official image.
        self.postgres = self.svc.start("postgres", self.as_user([
            os.path.join(PG_BIN, "postgres"), "-D", data, "-p", str(self.pg_port), "-k", sock,
            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "jit=off"]
            + [a for o in self.args.pg_option for a in ("-c", o)]),
            env=self.base_env(), stop_signal=signal.SIGINT)
        wait_for("postgres", lambda: run([os.path.join(PG_BIN, "pg_isready"), "-q", "-h", "127.0.0.1",
                                          "-p", str(self.pg_port)], timeout=5, check=False).returncode == 0,
                 30, self.postgres, os.path.join(self.tmp, "logs", "postgres.log"))

    def start_redis(self):
        rdir = self.owned_dir("redis")
        # As the live compose file: append-only, fsync every second.
        self.redis = self.svc.start("redis", self.as_user([
            shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", rdir,
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", ""]),
            env=self.base_env())

        def ping():
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        wait_for("redis", ping, 30, self.redis, os.path.join(self.tmp, "logs", "redis.log"))

    # -- the app
    def migrate_and_collect(self):
        run([self.binary, "migrate"], timeout=120, env=self.app_env())
        self.static = os.path.join(self.tmp, "static")
        os.makedirs(self.static)
        run([self.binary, "collectstatic", self.static], timeout=60, env=self.base_env())
        for dirpath, dirs, files in os.walk(self.tmp + "/static"):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        with open(os.path.join(self.static, "manifest.json")) as f:
            paths = json.load(f)["paths"]
        self.static_path = "/static/" + paths["app.css"]

    def start_serve(self, rust_log):
        self.serve_log = f"serve-{rust_log}.log"
        self.serve = self.svc.start("app serve", [self.binary, "serve"], env=self.app_env(rust_log),
                                    log_name=self.serve_log)
        wait_for("app serve", lambda: http_get(self.app_port, "/healthz")[0] == 200, 30, self.serve,
                 os.path.join(self.tmp, "logs", self.serve_log))

    def stop_serve(self):
        rc = self.svc.stop(self.serve)
        if rc not in (0, None):
            log(f"app serve exited with status {rc} after SIGTERM{_tail(os.path.join(self.tmp, 'logs', self.serve_log))}")
        self.serve = None

    def start_tasks(self, concurrency, rust_log="info"):
        self.tasks_log = f"tasks-c{concurrency}.log"
        self.tasks = self.svc.start("app tasks", [self.binary, "tasks"],
                                    env=self.app_env(rust_log, metrics=self.tasks_metrics,
                                                     WORKER_CONCURRENCY=concurrency),
                                    log_name=self.tasks_log)
        return self.tasks

    def wait_tasks(self):
        wait_for("app tasks", lambda: http_get(self.tasks_metrics, "/healthz")[0] == 200, 30, self.tasks,
                 os.path.join(self.tmp, "logs", self.tasks_log))

    def stop_tasks(self):
        rc = self.svc.stop(self.tasks)
        if rc not in (0, None):
            log(f"app tasks exited with status {rc} after SIGTERM")
        self.tasks = None

    # -- nginx
    def nginx_conf(self):
        src = os.path.join(REPO, "nix", "nginx.conf")
        if not os.path.exists(src):
            raise HarnessError("nix/nginx.conf is missing")
        ndir = self.owned_dir("nginx", mode=0o755)
        seen = {}
        out = []
        with open(src) as f:
            for line in f:
                m = re.search(r"#\s*SUBST:([\w-]+)\s*$", line)
                if not m or line.lstrip().startswith("#"):
                    out.append(line)
                    continue
                name = m.group(1)
                indent = re.match(r"\s*", line).group(0)
                seen[name] = seen.get(name, 0) + 1
                if name == "listen-default":
                    new = f"listen 127.0.0.1:{self.nginx_port} default_server;"
                elif name == "listen":
                    new = f"listen 127.0.0.1:{self.nginx_port};"
                elif name == "upstream":
                    new = f"set $app_upstream 127.0.0.1:{self.app_port};"
                elif name == "static":
                    new = f"alias {self.static}/;"
                elif name == "pid":
                    new = f"pid {ndir}/nginx.pid;"
                elif name == "resolver":
                    new = "resolver 127.0.0.1 valid=10s ipv6=off;"   # never asked: the upstream is an IP literal
                elif name == "temp":
                    t = re.match(r"\s*(\w+_temp_path)\s+(\S+?);", line)
                    if not t:
                        raise HarnessError(f"nix/nginx.conf: cannot read the SUBST:temp line {line.strip()!r}")
                    new = f"{t.group(1)} {ndir}/{os.path.basename(t.group(2))};"
                else:  # hosts and anything new: unchanged
                    out.append(line)
                    continue
                out.append(f"{indent}{new}  # SUBST:{name} (bench)\n")
        for need in ("listen-default", "listen", "upstream", "static", "pid", "temp"):
            if need not in seen:
                raise HarnessError(f"nix/nginx.conf has no line marked `# SUBST:{need}`; the harness cannot "
                                   "run it on loopback")
        if self.args.nginx_keepalive:
            text = "".join(out)
            if "proxy_pass http://$app_upstream;" not in text:
                raise HarnessError("--nginx-keepalive: no `proxy_pass http://$app_upstream;` in nix/nginx.conf")
            text = text.replace("proxy_pass http://$app_upstream;", "proxy_pass http://bench_app;")
            text = re.sub(r"^(http \{\n)", lambda m: m.group(1) + f"    upstream bench_app {{ server 127.0.0.1:"
                          f"{self.app_port}; keepalive {self.args.nginx_keepalive}; }}\n", text, count=1, flags=re.M)
            out = [text]
        conf = os.path.join(ndir, "nginx.conf")
        with open(conf, "w") as f:
            f.writelines(out)
        os.chmod(conf, 0o644)
        return conf

    def start_nginx(self):
        conf = self.nginx_conf()
        # stdout must be a file the service user may open again as /dev/stdout (the access log): not our pipe.
        t = subprocess.run(self.as_user([NGINX, "-t", "-q", "-e", "stderr", "-c", conf]), timeout=30,
                           env=self.base_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if t.returncode != 0:
            raise HarnessError(f"nginx -t refused the generated configuration:\n{t.stderr}")
        # The access log (JSON lines on stdout, as in the image) is written, then discarded.
        self.nginx = self.svc.start("nginx", self.as_user([NGINX, "-e", "stderr", "-c", conf]),
                                    env=self.base_env(), stdout=subprocess.DEVNULL, stop_signal=signal.SIGQUIT)
        wait_for("nginx", lambda: http_get(self.nginx_port, self.static_path)[0] == 200, 30, self.nginx,
                 os.path.join(self.tmp, "logs", "nginx.log"))

    def nginx_url(self, path):
        return f"http://127.0.0.1:{self.nginx_port}{path}"


# ---- measurements ----------------------------------------------------------------------------------------------

def measure_startup(stack, runs):
    """Launch -> first 200 on /healthz, polling with a raw socket every 2 ms."""
    times = []
    for i in range(runs):
        port, mport = free_port(), free_port()
        env = stack.app_env("info", listen=port, metrics=mport, WAIT_TIMEOUT=2)
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        t0 = time.perf_counter()
        proc = stack.svc.start("app serve (start-up)", [stack.binary, "serve"], env=env, log_name="startup.log")
        elapsed = None
        deadline = t0 + 10
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(request)
                    head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    elapsed = time.perf_counter() - t0
                    break
            except OSError:
                pass
            time.sleep(0.002)
        stack.svc.stop(proc)
        if elapsed is None:
            raise HarnessError("start-up: `app serve` never answered 200 on /healthz within 10 s"
                               + _tail(os.path.join(stack.tmp, "logs", "startup.log")))
        times.append(elapsed * 1000)
    return {"runs_ms": [round(t, 1) for t in times], "median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}


def tasks_since(stack, since_epoch):
    row = stack.psql(
        "SELECT count(*), count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'dead'), "
        "coalesce(extract(epoch FROM max(finished_at)), 0) "
        f"FROM tasks WHERE created_at >= to_timestamp({since_epoch:.6f})")
    total, done, dead, last = row.split("|")
    return int(total), int(done), int(dead), float(last)


def post_tasks(stack, wrk, n):
    """n POSTs through nginx by wrk (the rows in the database are counted, not wrk's answers)."""
    t0 = time.time()
    elapsed, res = wrk.run_count(stack.nginx_url("/api/tasks"), n, stack.args.post_timeout)
    return t0, t0 + elapsed, res


def wait_all_done(stack, since, timeout):
    deadline = time.monotonic() + timeout
    total = done = dead = 0
    last = 0.0
    while time.monotonic() < deadline:
        total, done, dead, last = tasks_since(stack, since)
        if total and done + dead >= total:
            return total, done, dead, last
        time.sleep(0.1)
    raise HarnessError(f"tasks: only {done} of {total} done after {timeout} s (dead {dead})"
                       + _tail(os.path.join(stack.tmp, "logs", stack.tasks_log or "tasks.log")))


def measure_tasks_end_to_end(stack, wrk, n):
    since = time.time()
    t0, t1, res = post_tasks(stack, wrk, n)
    total, done, dead, last = wait_all_done(stack, since, stack.args.task_timeout)
    elapsed = max(last, t1) - t0
    return {"mode": "posted while the worker runs", "concurrency": stack.args.worker_concurrency,
            "tasks": total, "done": done, "dead": dead, "post_errors": res["errors"],
            "post_seconds": round(t1 - t0, 3), "post_rate": round(total / (t1 - t0), 1),
            "seconds": round(elapsed, 3), "tasks_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0}


def measure_tasks_drain(stack, wrk, n, concurrency):
    """The worker alone: a backlog of N is posted with the worker stopped, then one worker is started."""
    stack.stop_tasks()
    since = time.time()
    t0, t1, res = post_tasks(stack, wrk, n)
    total, _, _, _ = tasks_since(stack, since)
    depth = stack.psql("SELECT count(*) FROM tasks WHERE state <> 'done'")
    start = time.time()
    proc = stack.start_tasks(concurrency)
    if stack.profiler:
        stack.profiler.start(proc.pid, f"tasks-drain-c{concurrency}")
    total, done, dead, last = wait_all_done(stack, since, stack.args.task_timeout)
    if stack.profiler:
        stack.profiler.stop()
    elapsed = last - start
    hwm = proc_status(proc.pid).get("VmHWM", 0)
    cpu = cpu_seconds([proc.pid])
    return {"mode": "backlog drained by a fresh worker", "concurrency": concurrency, "tasks": total,
            "done": done, "dead": dead, "backlog": int(depth), "post_errors": res["errors"],
            "seconds": round(elapsed, 3), "tasks_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0,
            "worker_cpu_s": round(cpu, 2), "worker_cpu_us_per_task": round(cpu * 1e6 / total, 1) if total else None,
            "worker_peak_rss_mib": round(hwm / MIB, 1)}


class Profiler:
    """--profile DIR: `perf record` (cpu-clock, call graphs) of one process while a row is measured, and a flat
    `perf report` next to it. Profiling costs throughput: figures of a profiled run are not for the README."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.proc = None

    def start(self, pid, name):
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.data = os.path.join(self.dir, f"{self.name}.data")
        self.proc = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-p", str(pid),
                                      "-o", self.data], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, f"{self.name}.perf.log"), "w"),
                                     preexec_fn=_child_setup)
        time.sleep(0.3)

    def stop(self):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        for mode, args in (("flat", ["--no-children", "-g", "none"]), ("children", ["--children", "-g", "none"])):
            with open(os.path.join(self.dir, f"{self.name}.{mode}.txt"), "w") as out:
                subprocess.run(["perf", "report", "-i", self.data, "--stdio", "--percent-limit", "0.5",
                                "--sort", "symbol"] + args, stdout=out, stderr=subprocess.DEVNULL, timeout=300)


def http_row(stack, wrk, name, url, script, log_level, warmup, seconds):
    wrk.run(url, warmup, script)
    profiling = stack.profiler and stack.serve and log_level != "-"
    if profiling:
        stack.profiler.start(stack.serve.pid, f"serve-{name}-{log_level}")
    pg = process_tree(stack.postgres.pid)
    ng = process_tree(stack.nginx.pid)
    groups = {"serve": [stack.serve.pid], "tasks": [stack.tasks.pid] if stack.tasks else [],
              "postgres": pg, "nginx": ng, "redis": [stack.redis.pid]}
    before = {k: cpu_seconds(v) for k, v in groups.items()}
    w0 = time.monotonic()
    r = wrk.run(url, seconds, script)
    wall = time.monotonic() - w0
    after = {k: cpu_seconds(process_tree(stack.postgres.pid) if k == "postgres" else
                            process_tree(stack.nginx.pid) if k == "nginx" else v) for k, v in groups.items()}
    if profiling:
        stack.profiler.stop()
    r["name"] = name
    r["log"] = log_level
    r["url"] = url
    r["cpu_us_per_req"] = {k: round((after[k] - before[k]) * 1e6 / r["requests"], 1) if r["requests"] else None
                           for k in groups}
    r["cpu_cores_busy"] = {k: round((after[k] - before[k]) / wall, 2) for k in groups}
    return r


# ---- sizes -----------------------------------------------------------------------------------------------------

def standin_image_size(binary):
    script = os.path.join(REPO, "tests", "e2e", "standins.sh")
    if not os.path.exists(script):
        return None, "n/a (tests/e2e/standins.sh not found)"
    if not shutil.which("docker"):
        return None, "n/a (no docker CLI)"
    try:
        if subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=20).returncode != 0:
            return None, "n/a (no Docker daemon answers)"
    except subprocess.TimeoutExpired:
        return None, "n/a (docker info timed out)"
    with open(os.path.join(REPO, "nix", "image.json")) as f:
        image = json.load(f)["app"]["image"]
    tag = f"bench-{os.getpid()}"
    env = dict(os.environ, APP_BIN=binary, STANDIN_TAG=tag)
    try:
        res = subprocess.run(["bash", script, "build", "app"], env=env, timeout=300, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            return None, f"n/a (standins.sh build app failed: {res.stdout.strip().splitlines()[-1:]})"
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", f"{image}:{tag}"],
                             timeout=30, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            return None, f"n/a (image {image}:{tag} not found after the build)"
        return int(out.stdout.strip()), f"{image}:{tag} built by tests/e2e/standins.sh (removed again)"
    except subprocess.TimeoutExpired:
        return None, "n/a (standins.sh timed out)"
    finally:
        subprocess.run(["bash", script, "remove", "app"], env=env, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


# ---- build -----------------------------------------------------------------------------------------------------

def ensure_binary(args):
    if args.binary:
        if not os.access(args.binary, os.X_OK):
            raise HarnessError(f"--binary {args.binary} is not an executable")
        return os.path.abspath(args.binary)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.path.join(target, "release", "app")
    if args.no_build:
        if not os.access(binary, os.X_OK):
            raise HarnessError(f"{binary} is missing (and --no-build was given)")
        return binary
    if not shutil.which("cargo"):
        if os.access(binary, os.X_OK):
            log("no cargo: using the existing release binary as it is")
            return binary
        raise HarnessError("no cargo to build the release binary")
    log("cargo build --release --bin app (a no-op when up to date)")
    env = dict(os.environ, SQLX_OFFLINE="true")
    t = time.monotonic()
    res = subprocess.run(["cargo", "build", "--release", "--bin", "app"], cwd=REPO, env=env, timeout=3600,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise HarnessError("cargo build --release failed:\n" + res.stdout[-3000:])
    log(f"release binary ready ({time.monotonic() - t:.0f} s)")
    return binary


# ---- report ----------------------------------------------------------------------------------------------------

def fmt_mib(b):
    return f"{b / MIB:.1f} MiB" if b is not None else "n/a"


def verdict(ok):
    return "PASS" if ok else "MISS"


def report(results):
    lines = []
    meta = results["meta"]
    lines.append(f"benchmark {meta['date']}  commit {meta['commit']}  {meta['cpus']} CPUs  "
                 f"load {meta['loadavg_start']} -> {meta['loadavg_end']}  compilers running at start: "
                 f"{meta['compilers_at_start']}")
    for e in meta["experiments"]:
        lines.append(f"EXPERIMENT (not the project's configuration): {e}")
    if results["http"]:
        lines.append(f"wrk {meta['wrk_threads']} threads, {meta['connections']} connections, {meta['warmup_s']} s "
                     f"warm-up + {meta['duration_s']} s per row; ratio = req/s / static req/s "
                     f"({results['static_base_rps']:.0f}, mean of the first and last static rows); "
                     "app µs/req = CPU time of `app serve` per request")
        lines.append("")
        hdr = f"{'HTTP (through nginx unless direct)':<38} {'log':<5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} " \
              f"{'errors':>7} {'ratio':>6} {'app µs/req':>10}"
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for r in results["http"]:
            app_cpu = r["cpu_us_per_req"].get("serve")
            app_cpu = f"{app_cpu:.0f}" if app_cpu else "-"
            lines.append(f"{r['name']:<38} {r['log']:<5} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} "
                         f"{r['p99_ms']:>8.2f} {r['errors']:>7} {r['ratio']:>6.2f} {app_cpu:>10}")
    if results["tasks"]:
        lines.append("")
        hdr = f"{'tasks (wordcount, 1 worker, posted through nginx)':<50} {'conc.':>5} {'tasks':>6} " \
              f"{'seconds':>8} {'tasks/s':>8}"
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for t in results["tasks"]:
            lines.append(f"{t['mode']:<50} {t['concurrency']:>5} {t['tasks']:>6} {t['seconds']:>8.2f} "
                         f"{t['tasks_per_s']:>8.0f}")
    m = results["memory"]
    lines.append("")
    line = f"memory   serve: idle {fmt_mib(m['serve_idle'])}"
    if "serve_peak" in m:
        line += f", peak {fmt_mib(m['serve_peak'])} (RUST_LOG=info rows)"
    if "serve_warn_peak" in m:
        line += f"; idle {fmt_mib(m['serve_warn_idle'])}, peak {fmt_mib(m['serve_warn_peak'])} (warn rows)"
    lines.append(line)
    line = f"         tasks: idle {fmt_mib(m['tasks_idle'])}"
    if "tasks_peak" in m:
        line += f", peak {fmt_mib(m['tasks_peak'])} (end-to-end row)"
    lines.append(line)
    s = results["startup"]
    if s:
        lines.append(f"start-up launch -> first 200 on /healthz: median {s['median_ms']} ms (runs {s['runs_ms']})")
    z = results["sizes"]
    image = f"{fmt_mib(z['standin_image'])} ({z['standin_note']})" if z["standin_image"] else z["standin_note"]
    pg = results.get("postgres_stats")
    if pg:
        lines.append(f"postgres {pg['commits']} commits; tasks table: {pg['task_inserts']} inserts, "
                     f"{pg['task_updates']} updates ({pg['task_hot_updates']} HOT), {pg['autovacuums']} autovacuums")
    lines.append(f"sizes    release binary {fmt_mib(z['binary'])}; stand-in app image {image}")
    lines.append("")
    lines.append("targets (judged on the default RUST_LOG=info rows)")
    for t in results["targets"]:
        lines.append(f"  {t['verdict']:<4}  {t['target']:<44} {t['measured']}")
    return "\n".join(lines)


def judge(results):
    rows = {(r["key"], r["log"]): r for r in results["http"]}
    m, t = results["memory"], []

    def add(target, ok, measured):
        t.append({"target": target, "verdict": "SKIP" if ok is None else verdict(ok), "measured": measured})

    h = rows.get(("healthz_nginx", "info"))
    if h:
        add("/healthz via nginx >= 40% of static", h["ratio"] >= TARGETS["healthz_ratio"],
            f"{h['ratio'] * 100:.0f}% ({h['rps']:.0f} req/s)")
    else:
        add("/healthz via nginx >= 40% of static", None, "not measured")
    r = rows.get(("root_nginx", "info"))
    if r:
        add("/ via nginx >= 15% of static", r["ratio"] >= TARGETS["root_ratio"],
            f"{r['ratio'] * 100:.1f}% ({r['rps']:.0f} req/s)")
        add("/ via nginx p99 < 50 ms at 64 connections", r["p99_ms"] < TARGETS["root_p99_ms"],
            f"{r['p99_ms']:.1f} ms")
    else:
        add("/ via nginx >= 15% of static", None, "not measured")
        add("/ via nginx p99 < 50 ms at 64 connections", None, "not measured")
    add("serve idle RSS <= 20 MiB", m["serve_idle"] <= TARGETS["serve_idle_mib"] * MIB, fmt_mib(m["serve_idle"]))
    if "serve_peak" in m:
        add("serve peak RSS <= 60 MiB", m["serve_peak"] <= TARGETS["serve_peak_mib"] * MIB,
            fmt_mib(m["serve_peak"]))
    else:
        add("serve peak RSS <= 60 MiB", None, "not measured")
    add("tasks idle RSS <= 20 MiB", m["tasks_idle"] <= TARGETS["tasks_idle_mib"] * MIB, fmt_mib(m["tasks_idle"]))
    if results["startup"]:
        s = results["startup"]["median_ms"]
        add("start-up to first 200 <= 150 ms", s <= TARGETS["startup_ms"], f"{s} ms (median)")
    else:
        add("start-up to first 200 <= 150 ms", None, "not measured")
    if results["tasks"]:
        e = results["tasks"][0]
        add(">= 1000 tasks/s end to end, 1 worker", e["tasks_per_s"] >= TARGETS["tasks_per_s"],
            f"{e['tasks_per_s']:.0f} tasks/s (WORKER_CONCURRENCY {e['concurrency']})")
    else:
        add(">= 1000 tasks/s end to end, 1 worker", None, "not measured")
    return t


# ---- main ------------------------------------------------------------------------------------------------------

def git_commit():
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml",
                                "Cargo.lock", "migrations", "templates", "static"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
        return out + ("+dirty" if dirty else "") if out else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def main():
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "latest.json"),
                   help="where to write the JSON results (default bench/results/latest.json)")
    p.add_argument("--duration", type=int, default=10, help="seconds measured per HTTP row (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up seconds before every HTTP row (default 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--tasks", type=int, default=5000, help="tasks per task-throughput row (default 5000)")
    p.add_argument("--worker-concurrency", type=int, default=4, help="WORKER_CONCURRENCY of the worker (default 4)")
    p.add_argument("--high-concurrency", type=int, default=16,
                   help="WORKER_CONCURRENCY of the extra drain row (default 16; 0 skips it)")
    p.add_argument("--db-pool-size", type=int, default=10, help="DB_POOL_SIZE of serve and tasks (default 10)")
    p.add_argument("--startup-runs", type=int, default=5, help="start-up measurements (default 5)")
    p.add_argument("--skip", action="append", default=[], choices=["startup", "tasks", "http", "warn", "image"],
                   help="leave out a part (repeatable): startup, tasks, http, warn (the RUST_LOG=warn repeat of "
                        "the app rows), image (the stand-in image size)")
    p.add_argument("--quick", action="store_true", help="3 s rows, 1 s warm-up, 1000 tasks, 3 start-ups")
    p.add_argument("--binary", help="use this app binary instead of building target/release/app")
    p.add_argument("--no-build", action="store_true", help="do not run cargo; use target/release/app as it is")
    p.add_argument("--nginx-keepalive", type=int, default=0, metavar="N",
                   help="EXPERIMENT: proxy through an upstream block with `keepalive N` instead of the config's "
                        "per-request connection")
    p.add_argument("--pg-option", action="append", default=[], metavar="NAME=VALUE",
                   help="EXPERIMENT: a PostgreSQL setting (repeatable), e.g. synchronous_commit=off")
    p.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                   help="EXPERIMENT: an environment variable for serve and tasks (repeatable)")
    p.add_argument("--profile", metavar="DIR",
                   help="perf record `app serve` during every HTTP row and `app tasks` during the drain rows into "
                        "DIR (with a flat report each); use an unstripped --binary for symbols")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) after the run")
    p.add_argument("--max-seconds", type=int, default=1200,
                   help="stop everything and fail after this long, build excluded (default 1200)")
    args = p.parse_args()
    args.skip = set(args.skip)
    args.binary_given = bool(args.binary)
    for kv in args.pg_option + args.app_env:
        if "=" not in kv:
            p.error(f"expected NAME=VALUE, got {kv!r}")
    if args.quick:
        args.duration, args.warmup, args.tasks, args.startup_runs = 3, 1, 1000, 3
    args.post_timeout = 120
    args.task_timeout = 180

    for tool in ("wrk", "setpriv" if os.geteuid() == 0 else "true"):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} is not installed (bench/run.sh installs it with .ci/bench-deps.sh)")
    for path in (NGINX, os.path.join(PG_BIN, "postgres"), os.path.join(PG_BIN, "initdb")):
        if not os.access(path, os.X_OK):
            raise HarnessError(f"{path} is missing")
    if not shutil.which("redis-server"):
        raise HarnessError("redis-server is missing")

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(), "host": platform.node(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "loadavg_start": loadavg(), "compilers_at_start": busy_compilers(),
            "connections": args.connections, "wrk_threads": args.threads, "duration_s": args.duration,
            "warmup_s": args.warmup}
    log(f"load average at start {meta['loadavg_start']} ({meta['compilers_at_start']} compiler processes running)")

    args.binary = ensure_binary(args)

    def on_signal(signum, _frame):
        raise Stop(f"stopped by {signal.Signals(signum).name}")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(args.max_seconds)

    tmp = tempfile.mkdtemp(prefix="docker-sample-bench.")
    os.makedirs(os.path.join(tmp, "logs"))
    services = Services(tmp)
    try:
        results = benchmark(args, tmp, services, meta)
    finally:
        signal.alarm(0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)   # cleanup is bounded; let it finish
        services.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(report(results), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    log(f"results written to {args.out}")
    return 0


def benchmark(args, tmp, services, meta):
    stack = Stack(args, tmp, services)
    log(f"temporary directory {tmp}; starting PostgreSQL and Redis")
    stack.start_postgres()
    stack.start_redis()
    stack.migrate_and_collect()
    startup = None
    if "startup" not in args.skip:
        log("measuring start-up")
        startup = measure_startup(stack, args.startup_runs)

    stack.start_serve("info")
    stack.start_tasks(args.worker_concurrency)
    stack.wait_tasks()
    stack.start_nginx()
    time.sleep(1.0)
    memory = {"serve_idle": proc_status(stack.serve.pid)["VmRSS"],
              "tasks_idle": proc_status(stack.tasks.pid)["VmRSS"]}
    log(f"idle RSS: serve {fmt_mib(memory['serve_idle'])}, tasks {fmt_mib(memory['tasks_idle'])}")

    wrk = Wrk(tmp, args.threads, args.connections)
    get_script = wrk.script("get", "")
    post_script = wrk.script("post", WRK_POST)

    # A short warm-up of the whole path (connections in the pools, pages in PostgreSQL's cache).
    wrk.run(stack.nginx_url("/api/tasks"), 1, post_script)
    wait_all_done(stack, 0, 120)

    tasks = []
    if "tasks" not in args.skip:
        log(f"tasks: {args.tasks} posted while the worker runs")
        tasks_rss = RssSampler({"tasks": stack.tasks.pid})
        tasks_rss.start()
        tasks.append(measure_tasks_end_to_end(stack, wrk, args.tasks))
        tasks_rss.halt.set()
        tasks_rss.join()
        memory["tasks_peak"] = proc_status(stack.tasks.pid)["VmHWM"]
        log(f"tasks: {tasks[-1]['tasks_per_s']:.0f} tasks/s end to end")
        for c in [args.worker_concurrency] + ([args.high_concurrency] if args.high_concurrency else []):
            log(f"tasks: backlog of {args.tasks}, drained by a fresh worker with concurrency {c}")
            tasks.append(measure_tasks_drain(stack, wrk, args.tasks, c))
            log(f"tasks: {tasks[-1]['tasks_per_s']:.0f} tasks/s")
        stack.stop_tasks()
        stack.start_tasks(args.worker_concurrency)
        stack.wait_tasks()
    task_id = stack.psql("SELECT id FROM tasks WHERE state = 'done' ORDER BY created_at DESC LIMIT 1")
    if not task_id:
        raise HarnessError("no finished task to GET")

    http = []
    base = None
    if "http" not in args.skip:
        rows = [
            ("healthz_direct", "/healthz direct (no nginx)", f"http://127.0.0.1:{stack.app_port}/healthz",
             get_script),
            ("healthz_nginx", "/healthz", stack.nginx_url("/healthz"), get_script),
            ("root_nginx", "/ (status page: PostgreSQL + Redis)", stack.nginx_url("/"), get_script),
            ("get_task_nginx", "GET /api/tasks/{id}", stack.nginx_url(f"/api/tasks/{task_id}"), get_script),
            ("post_task_nginx", "POST /api/tasks (wordcount)", stack.nginx_url("/api/tasks"), post_script),
        ]

        def static_row(label):
            log(f"http: {label}")
            r = http_row(stack, wrk, label, stack.nginx_url(stack.static_path), get_script, "-", args.warmup,
                         args.duration)
            r["key"] = "static"
            http.append(r)
            return r

        def app_rows(level):
            sampler = RssSampler({"serve": stack.serve.pid})
            sampler.start()
            for key, label, url, script in rows:
                log(f"http: {label} (RUST_LOG={level})")
                since = time.time()
                r = http_row(stack, wrk, label, url, script, level, args.warmup, args.duration)
                r["key"] = key
                http.append(r)
                if key == "post_task_nginx":
                    # Let the worker finish what the row queued, so it does not load the next rows.
                    log("http: waiting for the worker to finish the tasks the POST row queued")
                    wait_all_done(stack, since, 600)
            sampler.halt.set()
            sampler.join()
            return proc_status(stack.serve.pid)["VmHWM"], sampler.max["serve"]

        s1 = static_row("static file (hashed, nginx only)")
        memory["serve_peak"], memory["serve_peak_sampled"] = app_rows("info")
        if "warn" not in args.skip:
            stack.stop_serve()
            stack.start_serve("warn")
            time.sleep(1.0)
            memory["serve_warn_idle"] = proc_status(stack.serve.pid)["VmRSS"]
            memory["serve_warn_peak"], _ = app_rows("warn")
        s2 = static_row("static file (again, at the end)")
        base = (s1["rps"] + s2["rps"]) / 2
        for r in http:
            r["ratio"] = r["rps"] / base if base else 0.0

    # How PostgreSQL spent the run: commits, and how many task updates were HOT (no index maintenance).
    stats = stack.psql("SELECT d.xact_commit, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del, "
                       "t.autovacuum_count, t.autoanalyze_count FROM pg_stat_database d, pg_stat_user_tables t "
                       "WHERE d.datname = current_database() AND t.relname = 'tasks'")
    keys = ("commits", "task_inserts", "task_updates", "task_hot_updates", "task_deletes", "autovacuums",
            "autoanalyzes")
    postgres_stats = dict(zip(keys, (int(v) for v in stats.split("|")))) if stats else {}

    binary_size = os.path.getsize(args.binary)
    if "image" in args.skip:
        image_size, note = None, "n/a (skipped)"
    else:
        log("sizes: building the stand-in app image")
        image_size, note = standin_image_size(args.binary)
    meta["loadavg_end"] = loadavg()
    meta["binary"] = args.binary
    meta["skipped"] = sorted(args.skip)
    meta["postgres"] = "PostgreSQL 15, initdb defaults (fsync on, synchronous_commit on)"
    meta["redis"] = "appendonly yes, appendfsync everysec"
    meta["nginx"] = "Debian nginx 1.22 with nix/nginx.conf (SUBST lines replaced), access log to /dev/null"
    meta["experiments"] = experiments(args)
    results = {"meta": meta, "static_base_rps": base, "http": http, "tasks": tasks, "memory": memory,
               "postgres_stats": postgres_stats, "startup": startup, "sizes": {"binary": binary_size, "standin_image": image_size,
                                             "standin_note": note}}
    results["targets"] = judge(results)
    return results


def experiments(args):
    """Departures from the project's configuration, for trying a fix; printed on the report's first line."""
    out = []
    if args.nginx_keepalive:
        out.append(f"nginx upstream block with keepalive {args.nginx_keepalive}")
    out += [f"postgres -c {o}" for o in args.pg_option]
    out += [f"app env {e}" for e in args.app_env]
    if args.binary_given:
        out.append(f"binary {args.binary}")
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
    except Stop as e:
        log(f"FAILED: {e}")
        sys.exit(1)
