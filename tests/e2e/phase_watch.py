"""Watch mode (scripts/watch.sh) on the development stack: edits to a copy of the source tree reach the running
stack. A template edit is served on the next request, a Rust edit after an incremental build and a restart, a new
migration is applied before the restart, a compile error leaves the old binary serving, and a task running during
a restart is finished or handed back.

The edits go to a copy of the tree (in the run's work directory), never to the repository; the copy builds into
the repository's target directory (CARGO_TARGET_DIR), so a warm musl build is reused.
"""

import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import datetime

from harness import (
    DEV_PORT,
    DEV_PROJECT,
    LOG_DIR,
    REPO,
    TAG,
    check,
    compose_env,
    get_task,
    inspect,
    log,
    post_task,
    request,
    run,
)

TREE = ("src", "migrations", "templates", "static", ".sqlx", "compose", "env", "scripts", "build.rs", "Cargo.toml",
        "Cargo.lock", "rust-toolchain.toml")
# The first build compiles every dependency for the musl target when target/ is cold (a fresh CI clone).
START_TIMEOUT = 1800
# The target is 15 s (printed as a FIGURE); the check only needs the edit to arrive.
EDIT_TIMEOUT = 600
PROBE = "/no-such-route-watch-probe"
MIGRATION = "20991231000000"
# Longer than a rebuild, so the tasks still run when the worker restarts (SHUTDOWN_TIMEOUT 20 s decides whether
# they finish or are handed back).
TASK_MS = 30000


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
            time.sleep(0.1)
        return None

    def tail(self, n=40):
        return "\n".join(self.text().splitlines()[-n:])

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.out.close()


def inotify_watches(pid):
    """How many inotify watches the process holds (watchexec's, once it watches the tree)."""
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    count += sum(1 for line in f if line.startswith("inotify wd:"))
            except OSError:
                continue
    except OSError:
        return 0
    return count


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


def started_at(cid):
    return inspect(cid)["State"]["StartedAt"]


def wait_served(predicate, timeout):
    """Seconds until a GET of the probe route satisfies predicate(resp); None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        r = request(DEV_PORT, "GET", PROBE, timeout=5)
        if predicate(r):
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def phase_watch():
    work = os.path.dirname(LOG_DIR)
    tree = os.path.join(work, "watch-tree")
    copy_tree(tree)
    env = compose_env({
        "DEV_VERSION": TAG, "DEV_HTTP_PORT": str(DEV_PORT), "COMPOSE_PROJECT_NAME": DEV_PROJECT,
        "CARGO_TARGET_DIR": os.path.join(REPO, "target"), "WATCH_BIN_DIR": os.path.join(work, "watch-bin"),
        "CARGO_TERM_COLOR": "never",
    })
    compose = ["docker", "compose", "-p", DEV_PROJECT, "-f", os.path.join(tree, "compose", "dev.yml"),
               "-f", os.path.join(tree, "compose", "watch.yml")]
    log(f"watch: scripts/watch.sh on a copy of the tree in {tree} (project {DEV_PROJECT}, port {DEV_PORT})")
    phase_t0 = time.monotonic()
    watch = Watch(tree, env)
    try:
        exercise(watch, tree, compose, env)
    finally:
        watch.stop()
        shutil.copy(watch.log_path, os.path.join(LOG_DIR, "watch-output.log"))
        p = run(compose + ["logs", "--no-color", "--timestamps"], timeout=120, env=env)
        with open(os.path.join(LOG_DIR, "watch-stack.log"), "w") as f:
            f.write(p.stdout + p.stderr)
        p = run(compose + ["down", "--volumes", "--remove-orphans", "--timeout", "5"], timeout=180, env=env)
        check("watch: `down --volumes` removes the stack", p.returncode == 0, p.stderr.strip()[-300:])
        log(f"FIGURE watch phase total: {time.monotonic() - phase_t0:.1f} s (initial musl build included)")


def exercise(watch, tree, compose, env):
    took = watch.wait_for("watch: ready in", timeout=START_TIMEOUT)
    if not check("watch: scripts/watch.sh builds the musl binary and brings the stack up", took is not None,
                 f"{took:.1f}s" if took is not None else f"exit {watch.proc.poll()}\n{watch.tail()}"):
        return
    log(f"FIGURE watch start (musl debug build + up --wait): {took:.1f} s")
    def app():
        return run(compose + ["ps", "-a", "-q", "app"], env=env).stdout.strip()

    def tasks():
        return run(compose + ["ps", "-a", "-q", "tasks"], env=env).stdout.strip()

    entry = inspect(app())["Config"]["Entrypoint"]
    check("watch: app runs the mounted binary, not the image's", entry == ["/watch/app"], f"entrypoint {entry}")

    # watchexec only sees edits once its watches exist: wait for them (one per directory of src/ at least).
    src_dirs = sum(1 for _ in os.walk(os.path.join(tree, "src")))
    deadline = time.monotonic() + 60
    while inotify_watches(watch.proc.pid) < src_dirs and time.monotonic() < deadline:
        time.sleep(0.1)
    if not check("watch: watchexec watches the tree", inotify_watches(watch.proc.pid) >= src_dirs,
                 f"{inotify_watches(watch.proc.pid)} inotify watches for {src_dirs} directories of src/"):
        return

    # --- a template edit: the next request -------------------------------------------------------------------
    token = uuid.uuid4().hex[:8]
    t = time.monotonic()
    edit(os.path.join(tree, "templates", "status.html"), "<h2>Services</h2>", f"<h2>Services {token}</h2>")
    r = request(DEV_PORT, "GET", "/")
    template_took = time.monotonic() - t
    check("watch: a template edit is served on the next request, no restart",
          r.status == 200 and token.encode() in r.body, f"{r.status} in {template_took:.2f}s")

    # --- a Rust edit: rebuilt, restarted, served --------------------------------------------------------------
    before = started_at(app())
    mark = watch.mark()
    t = time.monotonic()
    edit(os.path.join(tree, "src", "startup.rs"), '"no such route"', f'"no such route {token}"')
    took = wait_served(lambda r: r.status == 404 and token.encode() in r.body, EDIT_TIMEOUT)
    check("watch: a Rust handler edit is served after a rebuild and restart", took is not None,
          f"{took:.1f}s" if took is not None else watch.tail())
    # The app answers before the watcher's `up --wait` has seen both services healthy; the next step starts after.
    if took is None or watch.wait_for("watch: app and tasks are healthy", since=mark) is None:
        return
    built = [line for line in watch.text()[mark:].splitlines() if "watch: built in" in line]
    check("watch: the app container was restarted, not recreated", started_at(app()) != before,
          f"StartedAt {before} -> {started_at(app())}")
    log(f"FIGURE watch Rust edit -> served: {took:.1f} s (target 15 s; {built[-1].strip() if built else 'no build line'}); "
        f"template edit -> served: {template_took * 1000:.0f} ms (target < 1 s)")

    # --- a new migration while tasks run: migrate, then restart; the tasks finish or are handed back ------------
    ids = []
    for _ in range(2):
        r = post_task(DEV_PORT, "sleep", {"ms": TASK_MS})
        if r.status == 202 and r.json():
            ids.append(r.json()["id"])
    check(f"watch: two {TASK_MS // 1000} s sleep tasks queued", len(ids) == 2, repr(r))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [(get_task(DEV_PORT, i).json() or {}).get("state") for i in ids]
        if all(s == "running" for s in states):
            break
        time.sleep(0.2)
    check("watch: both tasks are running before the migration is added", all(s == "running" for s in states),
          f"states {states}")
    before = started_at(app())
    mark = watch.mark()
    t = time.monotonic()
    with open(os.path.join(tree, "migrations", f"{MIGRATION}_watch_probe.sql"), "w") as f:
        f.write("CREATE TABLE watch_probe (id bigint PRIMARY KEY);\n")
    restarting = watch.wait_for("watch: restarting app and tasks", since=mark)
    restart_wall = time.time()
    ready = watch.wait_for("watch: app and tasks are healthy", since=mark)
    ready = time.monotonic() - t if ready is not None else None
    out = watch.text()[mark:]
    check("watch: a new migration runs `app migrate` before the restart",
          ready is not None and "migrations/ changed: app migrate" in out
          and out.find("migrations/ changed") < out.find("watch: restarting"),
          f"{ready:.1f}s" if ready is not None else watch.tail())
    p = run(compose + ["exec", "-T", "db", "psql", "-U", "app", "-d", "app", "-tAc",
                       f"SELECT success FROM _sqlx_migrations WHERE version = {MIGRATION}"], env=env)
    check("watch: the migration is applied in PostgreSQL", p.stdout.strip() == "t", (p.stdout + p.stderr).strip())
    r = request(DEV_PORT, "GET", "/")
    check("watch: the restarted app knows the migration (status page: up to date, latest is the new one)",
          r.status == 200 and f"latest {MIGRATION}".encode() in r.body and started_at(app()) != before,
          f"{r.status}, StartedAt {before} -> {started_at(app())}")
    results = {}
    deadline = time.monotonic() + 120
    for tid in ids:
        while time.monotonic() < deadline:
            task = get_task(DEV_PORT, tid, wait=20).json() or {}
            if task.get("state") in ("done", "dead"):
                break
        results[tid] = task
    done = [t for t in results.values() if t.get("state") == "done"]
    lost = len(ids) - len(done)
    attempts = [t.get("attempts") for t in results.values()]
    # Finished after the restart began: the old worker finished it during its shutdown, or handed it back.
    at_restart = [t for t in done if t.get("finished_at")
                  and datetime.fromisoformat(t["finished_at"]).timestamp() > restart_wall]
    check("watch: tasks running during the restart are finished or handed back (lost 0)",
          lost == 0 and restarting is not None and len(at_restart) >= 1,
          f"lost {lost}, attempts {attempts}, {len(at_restart)} still running when the restart began")
    if ready is not None:
        log(f"FIGURE watch migration -> applied and restarted: {ready:.1f} s; {len(at_restart)} of {len(ids)} "
            f"tasks running at the restart, lost {lost}, attempts {attempts}")

    # --- a compile error: reported, nothing replaced, the old binary keeps serving -------------------------------
    before_app, before_tasks = started_at(app()), started_at(tasks())
    mark = watch.mark()
    with open(os.path.join(tree, "src", "http", "health.rs"), "a") as f:
        f.write('\npub fn watch_probe_compile_error() -> u32 {\n    "not a number"\n}\n')
    took = watch.wait_for("watch: build failed", since=mark)
    out = watch.text()[mark:]
    check("watch: a compile error is reported in the watch output", took is not None and "error[E0308]" in out,
          f"{took:.1f}s" if took is not None else watch.tail())
    r = request(DEV_PORT, "GET", PROBE)
    check("watch: after a compile error the previous binary keeps serving, unrestarted",
          r.status == 404 and token.encode() in r.body
          and (started_at(app()), started_at(tasks())) == (before_app, before_tasks), repr(r))
    check("watch: the watcher is still running after the compile error", watch.proc.poll() is None,
          f"exit {watch.proc.poll()}")
