"""Watch mode (scripts/watch.sh): `app serve` and `app tasks` on the host, PostgreSQL and Redis from compose/dev.yml.

Scripted edits to a copy of the tree, while a probe sends 20 requests/s the whole time: a handler's text (several
times, for a median), a template, a static file, a compile error then its fix, a new migration. Passes only with 0
refused connections (0 connection errors of any kind) and 0 5xx answers. The FIGURE lines give edit -> served for a
handler, a template and a static file, and migration -> applied; the targets are reported, not asserted.

The edits go to a copy of the tree (in the run's work directory, removed with it), never to the repository; the
copy builds into the repository's target directory (CARGO_TARGET_DIR), so the dependencies that `cargo test` built
are reused and only the app crate compiles.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid

from harness import (
    DEV_PROJECT,
    LOG_DIR,
    REPO,
    check,
    compose_env,
    get_task,
    log,
    post_task,
    request,
    run,
)

# Every source file of the packages' targets too (tests/, bench/): `cargo sqlx prepare` touches them all, and when
# one is missing it falls back to a whole `cargo clean` of the shared target directory.
TREE = ("src", "core", "migrations", "templates", "static", ".sqlx", "compose", "env", "scripts", "tests", "bench",
        "Cargo.toml", "Cargo.lock", "rust-toolchain.toml")
# The first step builds the app crate (and any dependency the target directory lacks).
START_TIMEOUT = 1200
EDIT_TIMEOUT = 300
HANDLER_EDITS = 4
MIGRATION = "20991231000000"
PROBE_RATE = 20  # requests/s, in two threads


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watch:
    """scripts/watch.sh of the copied tree, its output in a log file that the checks read."""

    def __init__(self, tree, env):
        self.tree, self.env = tree, env
        self.log_path = os.path.join(LOG_DIR, "watch.log")
        self.out = open(self.log_path, "w")
        self.proc = subprocess.Popen(["bash", os.path.join(tree, "scripts", "watch.sh")], cwd=tree, env=env,
                                     stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def mark(self):
        return len(self.text())

    def wait_for(self, needle, since=0, timeout=EDIT_TIMEOUT):
        """Seconds until `needle` appears in the output after offset `since`; None on timeout or exit."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if needle in self.text()[since:]:
                return time.monotonic() - start
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def tail(self, n=40):
        return "\n".join(self.text().splitlines()[-n:])

    def stop(self):
        """SIGTERM, as a terminal's Ctrl-C would end it; the script stops app and tasks on its way out."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.out.close()


class Probe:
    """GETs at PROBE_RATE per second from the first step's start to the end: the handler's route, the status page
    (template, database), a static file. Every answer that is not a connection error or a 5xx is fine (404 is the
    handler's own answer)."""

    PATHS = ("/no-such-route-watch-probe", "/", "/static/app.css", "/readyz")

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.refused = []
        self.errors = []
        self.server_errors = []
        self.slowest = 0.0
        self.threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(2)]

    def _loop(self, n):
        i = n
        period = 2.0 / PROBE_RATE
        while not self.stop.is_set():
            started = time.monotonic()
            path = self.PATHS[i % len(self.PATHS)]
            i += 1
            r = request(self.port, "GET", path, timeout=60)
            with self.lock:
                self.count += 1
                self.slowest = max(self.slowest, r.elapsed)
                if r.error and "Refused" in r.error:
                    self.refused.append(f"{path}: {r.error}")
                elif r.error:
                    self.errors.append(f"{path}: {r.error}")
                elif r.status >= 500:
                    self.server_errors.append(f"{path}: {r.status} {r.body[:120]!r}")
            self.stop.wait(max(0.0, period - (time.monotonic() - started)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(90)


def copy_tree(dest):
    os.makedirs(dest)
    for name in TREE:
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), symlinks=True)
        elif os.path.exists(src):
            shutil.copy2(src, os.path.join(dest, name))


def edit(path, old, new):
    with open(path) as f:
        text = f.read()
    if old not in text:
        raise RuntimeError(f"{path}: `{old}` not found, the test's edit no longer applies")
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


def wait_get(port, path, predicate, timeout, interval=0.01):
    """Seconds until a GET of path satisfies predicate(resp); None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate(request(port, "GET", path, timeout=30)):
            return time.monotonic() - start
        time.sleep(interval)
    return None


def pids(watch_dir):
    out = {}
    for role in ("app", "tasks"):
        try:
            with open(os.path.join(watch_dir, f"{role}.pid")) as f:
                out[role] = int(f.read().strip())
        except (OSError, ValueError):
            out[role] = None
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def phase_watch():
    work = os.path.dirname(LOG_DIR)
    tree = os.path.join(work, "watch-tree")
    copy_tree(tree)
    # The copy's paths differ from the repository's, so its first build of the app crate is a cold one (the
    # incremental cache is keyed by them): an edit before the start puts that build into the start, and the
    # handler edits below are the warm ones a developer makes.
    edit(os.path.join(tree, "src", "http", "router.rs"), '"no such route"', '"no such route (watch copy)"')
    port, db_port, redis_port = free_port(), free_port(), free_port()
    target = os.path.join(REPO, "target")
    # Its own logs and pid files, apart from a watch.sh a developer may be running on the repository itself.
    watch_dir = os.path.join(work, "watch-run")
    env = compose_env({
        "DEV_HTTP_PORT": str(port), "DEV_DB_PORT": str(db_port), "DEV_REDIS_PORT": str(redis_port),
        "COMPOSE_PROJECT_NAME": DEV_PROJECT, "CARGO_TARGET_DIR": target, "WATCH_DIR": watch_dir,
        "CARGO_TERM_COLOR": "never",
    })
    compose = ["docker", "compose", "-p", DEV_PROJECT, "-f", os.path.join(tree, "compose", "dev.yml"),
               "-f", os.path.join(tree, "compose", "dev-host.yml")]
    log(f"watch: scripts/watch.sh on a copy of the tree in {tree} (project {DEV_PROJECT}, port {port})")
    phase_t0 = time.monotonic()
    watch = Watch(tree, env)
    probe = Probe(port)
    try:
        took = watch.wait_for("watch: serving the new build", timeout=START_TIMEOUT)
        if not check("watch: scripts/watch.sh starts db and redis, builds, and serves on the host", took is not None,
                     f"{took:.1f}s" if took is not None else f"exit {watch.proc.poll()}\n{watch.tail()}"):
            return
        log(f"FIGURE watch start (db and redis up, first build, app and tasks started): {took:.1f} s")
        probe_t0 = time.monotonic()
        with probe:
            exercise(watch, tree, port, watch_dir)
        with probe.lock:
            check(f"watch: the probe's {probe.count} requests (≥ {PROBE_RATE}/s throughout): 0 refused, 0 other "
                  "connection errors, 0 5xx",
                  probe.count > 0 and not (probe.refused or probe.errors or probe.server_errors),
                  f"refused {len(probe.refused)}, errors {len(probe.errors)}, 5xx {len(probe.server_errors)}: "
                  f"{(probe.refused + probe.errors + probe.server_errors)[:5]}")
            log(f"FIGURE watch probe: {probe.count} requests in {time.monotonic() - probe_t0:.0f} s, refused "
                f"{len(probe.refused)}, errors {len(probe.errors)}, 5xx {len(probe.server_errors)}, slowest "
                f"{probe.slowest:.2f} s")
        stopped_pids = pids(watch_dir)
        watch.stop()
        check("watch: stopping the watcher stops app and tasks, and the port is closed",
              not any(p and alive(p) for p in stopped_pids.values())
              and request(port, "GET", "/healthz", timeout=5).status is None,
              f"pids {stopped_pids}")
        prepare(tree, env)
    finally:
        watch.stop()
        shutil.copy(watch.log_path, os.path.join(LOG_DIR, "watch-output.log"))
        p = run(compose + ["down", "--volumes", "--remove-orphans", "--timeout", "5"], timeout=180, env=env)
        check("watch: `down --volumes` removes db and redis", p.returncode == 0, p.stderr.strip()[-300:])
        log(f"FIGURE watch phase total: {time.monotonic() - phase_t0:.1f} s (first build included)")


def prepare(tree, env):
    """`scripts/watch.sh --prepare` (README: after a query change) against the development database the watcher
    migrated: it regenerates .sqlx/ of the copy, which must equal the repository's (no query changed)."""
    t = time.monotonic()
    p = run(["bash", os.path.join(tree, "scripts", "watch.sh"), "--prepare"], timeout=900, env=env)
    took = time.monotonic() - t
    if not check("watch: `scripts/watch.sh --prepare` runs cargo sqlx prepare against the dev database",
                 p.returncode == 0, f"{took:.1f}s" if p.returncode == 0 else (p.stdout + p.stderr)[-1500:]):
        return
    # sqlx-cli's fallback when it cannot touch a source file: `cargo clean` of the whole target directory (the
    # repository's, shared with the rest of the suite: nginx, the Observatory scanner, every build).
    check("watch: --prepare recompiled the app crate only (no fallback to a whole `cargo clean`)",
          "Cleaning entire project" not in p.stdout + p.stderr,
          [line for line in (p.stdout + p.stderr).splitlines() if "minimal recompile" in line][:1])

    def files(d):
        return {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}

    ours, theirs = files(os.path.join(tree, ".sqlx")), files(os.path.join(REPO, ".sqlx"))
    check("watch: the regenerated .sqlx/ equals the committed one", ours == theirs,
          f"only here {sorted(set(ours) - set(theirs))[:3]}, only committed {sorted(set(theirs) - set(ours))[:3]}, "
          f"differ {[n for n in set(ours) & set(theirs) if ours[n] != theirs[n]][:3]}")


def exercise(watch, tree, port, watch_dir):
    out = watch.text()
    logs = [os.path.join(watch_dir, "app.log"), os.path.join(watch_dir, "tasks.log")]
    check("watch: the printed log paths exist (readable from another shell)",
          all(p in out and os.path.exists(p) for p in logs), f"{logs}")
    started = pids(watch_dir)
    check("watch: app and tasks run as host processes", all(p and alive(p) for p in started.values()),
          f"{started}")

    # --- handler edits: rebuilt, restarted on the same socket, served ------------------------------------------
    handler = os.path.join(tree, "src", "http", "router.rs")
    text = "no such route (watch copy)"
    handler_times = []
    for _ in range(HANDLER_EDITS):
        token = uuid.uuid4().hex[:8]
        new = f"no such route {token}"
        mark = watch.mark()
        edit(handler, f'"{text}"', f'"{new}"')
        text = new
        took = wait_get(port, "/no-such-route-watch-probe", lambda r: r.status == 404 and token.encode() in r.body,
                        EDIT_TIMEOUT)
        if not check("watch: a handler edit is served after a rebuild", took is not None,
                     f"{took:.2f}s" if took is not None else watch.tail()):
            return
        handler_times.append(took)
        # The step's last line comes after it recorded the new pids and replaced the worker too.
        watch.wait_for("watch: serving the new build", since=mark)
    last_token = text
    log(f"FIGURE watch handler edit -> served: median {statistics.median(handler_times):.2f} s, max "
        f"{max(handler_times):.2f} s over {len(handler_times)} edits ({', '.join(f'{t:.2f}' for t in handler_times)}; "
        "target median <= 3 s, max <= 6 s)")
    restarted = pids(watch_dir)
    check("watch: the edits replaced app and tasks, and the old processes ended",
          all(restarted[r] != started[r] and alive(restarted[r]) and not alive(started[r]) for r in started),
          f"{started} -> {restarted}")

    # --- a template and a static file: read from the tree on the next request -------------------------------------
    token = uuid.uuid4().hex[:8]
    edit(os.path.join(tree, "templates", "status.html"), "<h2>Services</h2>", f"<h2>Services {token}</h2>")
    template_took = wait_get(port, "/", lambda r: r.status == 200 and token.encode() in r.body, 30, interval=0.005)
    check("watch: a template edit is served without a restart", template_took is not None,
          f"{template_took * 1000:.0f} ms" if template_took is not None else "not within 30 s")
    with open(os.path.join(tree, "static", "app.css"), "a") as f:
        f.write(f"\n/* {token} */\n")
    static_took = wait_get(port, "/static/app.css", lambda r: r.status == 200 and token.encode() in r.body, 30,
                           interval=0.005)
    check("watch: a static file edit is served without a restart", static_took is not None,
          f"{static_took * 1000:.0f} ms" if static_took is not None else "not within 30 s")
    if template_took is not None and static_took is not None:
        log(f"FIGURE watch template edit -> served: {template_took * 1000:.0f} ms; static edit -> served: "
            f"{static_took * 1000:.0f} ms (target <= 300 ms)")
    check("watch: templates and static files did not restart anything", pids(watch_dir) == restarted,
          f"{restarted} -> {pids(watch_dir)}")

    # --- a compile error, then its fix ------------------------------------------------------------------------------
    health = os.path.join(tree, "src", "http", "health.rs")
    with open(health) as f:
        original = f.read()
    mark = watch.mark()
    with open(health, "a") as f:
        f.write('\npub fn watch_probe_compile_error() -> u32 {\n    "not a number"\n}\n')
    took = watch.wait_for("watch: build failed", since=mark)
    check("watch: a compile error is printed by the watcher", took is not None and "error[E0308]" in watch.text()[mark:],
          f"{took:.1f}s" if took is not None else watch.tail())
    r = request(port, "GET", "/no-such-route-watch-probe")
    now = pids(watch_dir)
    check("watch: after a compile error the running app keeps serving the last good build, unrestarted",
          r.status == 404 and last_token.encode() in r.body and now == restarted,
          f"{r!r}, expected `{last_token}`; pids {restarted} -> {now}")
    mark = watch.mark()
    with open(health, "w") as f:
        f.write(original)
    took = watch.wait_for("watch: serving the new build", since=mark)
    check("watch: the fix is built and served", took is not None and pids(watch_dir)["app"] != restarted["app"],
          f"{took:.1f}s" if took is not None else watch.tail())

    # --- a new migration: applied before the restart -----------------------------------------------------------------
    mark = watch.mark()
    with open(os.path.join(tree, "migrations", f"{MIGRATION}_watch_probe.sql"), "w") as f:
        f.write("CREATE TABLE watch_probe (id bigint PRIMARY KEY);\n")
    migrated = wait_get(port, "/", lambda r: r.status == 200 and f"latest {MIGRATION}".encode() in r.body,
                        EDIT_TIMEOUT, interval=0.05)
    # The new app serves a moment before the step prints its last line.
    watch.wait_for("watch: serving the new build", since=mark)
    out = watch.text()[mark:]
    check("watch: a new migration is applied (app migrate) before the restart, and the new app knows it",
          migrated is not None and "migrations/ changed: app migrate" in out
          and out.find("migrations/ changed") < out.find("watch: serving the new build"),
          f"{migrated:.1f}s" if migrated is not None else watch.tail())
    if migrated is not None:
        log(f"FIGURE watch migration -> applied and served: {migrated:.2f} s")

    # --- the restarted worker runs tasks ------------------------------------------------------------------------------
    r = post_task(port, "wordcount", {"text": "watch a watch"})
    tid = (r.json() or {}).get("id") if r.status == 202 else None
    task = (get_task(port, tid, wait=20).json() or {}) if tid else {}
    check("watch: the restarted worker runs a task", task.get("state") == "done", f"{r!r} {task}")
