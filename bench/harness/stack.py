"""The servers under test, started on loopback with free ports: PostgreSQL, Redis, `app migrate` and
`collectstatic`, `app serve`, `app tasks` and nginx with nginx/httpd.conf; and the start-up time of `app serve`."""

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import time

from .common import NGINX, PG_BIN, REPO, HarnessError, log, tail
from .processes import free_port, http_get, run, wait_for
from .profile import Profiler

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
        self.hello_port = free_port()
        self.db_reference_port = free_port()
        self.serve = self.tasks = self.nginx = self.postgres = self.redis = self.hello = self.db_reference = None
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
            # No backlog bound: the POST rows enqueue faster than one worker drains, and cheap 503s past the bound
            # would flatter them.
            "QUEUE_MAX_BACKLOG": "0",
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
            log(f"app serve exited with status {rc} after SIGTERM{tail(os.path.join(self.tmp, 'logs', self.serve_log))}")
        self.serve = None

    def start_tasks(self, concurrency, rust_log="info"):
        self.tasks_log = f"tasks-c{concurrency}.log"
        self.tasks = self.svc.start("app tasks", [self.binary, "tasks"],
                                    env=self.app_env(rust_log, metrics=self.tasks_metrics,
                                                     WORKER_CONCURRENCY=concurrency),
                                    log_name=self.tasks_log)
        return self.tasks

    def wait_tasks(self):
        wait_for("app tasks", lambda: http_get(self.tasks_metrics, "/metrics")[0] == 200, 30, self.tasks,
                 os.path.join(self.tmp, "logs", self.tasks_log))

    def stop_tasks(self):
        rc = self.svc.stop(self.tasks)
        if rc not in (0, None):
            log(f"app tasks exited with status {rc} after SIGTERM")
        self.tasks = None

    def start_hello(self, binary):
        """The reference row's bare axum server (bench/hello.rs)."""
        self.hello = self.svc.start("hello", [binary, f"127.0.0.1:{self.hello_port}"], env=self.base_env())
        wait_for("hello", lambda: http_get(self.hello_port, "/")[0] == 200, 30, self.hello,
                 os.path.join(self.tmp, "logs", "hello.log"))

    def stop_hello(self):
        self.svc.stop(self.hello)
        self.hello = None

    def start_db_reference(self, binary):
        """The database route's reference (bench/db_reference.rs), on the benchmark's PostgreSQL."""
        dsn = f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres"
        self.db_reference = self.svc.start("db_reference", [binary, f"127.0.0.1:{self.db_reference_port}", dsn],
                                           env=self.base_env())
        wait_for("db_reference", lambda: http_get(self.db_reference_port, "/")[0] == 200, 30, self.db_reference,
                 os.path.join(self.tmp, "logs", "db_reference.log"))

    def stop_db_reference(self):
        self.svc.stop(self.db_reference)
        self.db_reference = None

    # -- nginx
    def nginx_conf(self):
        src = os.path.join(REPO, "nginx", "httpd.conf")
        if not os.path.exists(src):
            raise HarnessError("nginx/httpd.conf is missing")
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
                elif name == "upstream":   # an IP literal: no `resolve`, nothing to look up
                    new = f"server 127.0.0.1:{self.app_port};"
                elif name == "upstream-by-name":
                    new = f"set $app_by_name 127.0.0.1:{self.app_port};"
                elif name == "static":
                    new = f"alias {self.static}/;"
                elif name == "pid":
                    new = f"pid {ndir}/nginx.pid;"
                elif name == "resolver":
                    new = "resolver 127.0.0.1 valid=2s ipv6=off;"   # never asked: the upstream is an IP literal
                elif name == "temp":
                    t = re.match(r"\s*(\w+_temp_path)\s+(\S+?);", line)
                    if not t:
                        raise HarnessError(f"nginx/httpd.conf: cannot read the SUBST:temp line {line.strip()!r}")
                    new = f"{t.group(1)} {ndir}/{os.path.basename(t.group(2))};"
                else:  # hosts and anything new: unchanged
                    out.append(line)
                    continue
                out.append(f"{indent}{new}  # SUBST:{name} (bench)\n")
        for need in ("listen-default", "listen", "upstream", "static", "pid", "temp"):
            if need not in seen:
                raise HarnessError(f"nginx/httpd.conf has no line marked `# SUBST:{need}`; the harness cannot "
                                   "run it on loopback")
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
                               + tail(os.path.join(stack.tmp, "logs", "startup.log")))
        times.append(elapsed * 1000)
    return {"runs_ms": [round(t, 1) for t in times], "median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}
