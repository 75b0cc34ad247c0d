"""The command line: options, the order of the measurements, the JSON results."""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time

from .build import ensure_binary, ensure_db_reference, ensure_hello, standin_image_size
from .common import NGINX, PG_BIN, REPO, HarnessError, Stop, log
from .processes import Services, http_get
from .procfs import RssSampler, busy_compilers, loadavg, proc_status
from .report import fmt_mib, judge, report
from .stack import Stack, measure_startup
from .tasks import measure_tasks_drain, measure_tasks_end_to_end, wait_all_done
from .wrk import WRK_POST, Wrk, http_row

DESCRIPTION = """The benchmark harness; run it through bench/run.sh. Python 3 standard library only.

It starts everything itself, on 127.0.0.1 with free ports, in one temporary directory removed at exit:
PostgreSQL 15 (initdb; as a non-root user when run as root), Redis (append-only, fsync every second, as the live
compose file), `app migrate`, `app collectstatic`, the release `app serve` and `app tasks`, and nginx (NGINX; the
image's version, built by .ci/nginx.sh) with nginx/httpd.conf (only the lines marked `# SUBST:` replaced). Then it
measures, in this order:

  1. start-up: launch `app serve` (dependencies up) -> first 200 on /healthz, polled every 2 ms, median of runs;
  2. end-to-end tasks: N `wordcount` tasks POSTed through nginx by wrk while one worker runs, time until all are
     `done` in PostgreSQL (from the tasks' own finished_at); then the worker alone draining a backlog of N, with the
     default and a higher WORKER_CONCURRENCY;
  3. HTTP with wrk (2 threads, 64 connections, a warm-up before every row): a hashed static file through nginx (the
     ratio base, measured first and last), a bare axum "hello" server direct (bench/hello.rs, the reference for
     /healthz direct), the database route's reference direct (bench/db_reference.rs: tokio-postgres, a connection
     per thread), /healthz and GET /api/tasks?limit=10 direct and through nginx, / , GET /api/tasks/{id} and
     POST /api/tasks through nginx; the app rows with the default RUST_LOG=info and again with RUST_LOG=warn; / again
     at 256 connections;
  4. memory (VmRSS idle, VmHWM peak) of serve and tasks, and sizes (release binary, stand-in app image).

Every process it starts is stopped at exit (also on errors, Ctrl-C, SIGTERM and the --max-seconds alarm).
"""


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
    p = argparse.ArgumentParser(prog="bench/run.sh", description=DESCRIPTION,
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
    p.add_argument("--skip", action="append", default=[],
                   choices=["startup", "tasks", "http", "warn", "image", "hello", "db-reference", "c256"],
                   help="leave out a part (repeatable): startup, tasks, http, warn (the RUST_LOG=warn repeat of "
                        "the app rows), image (the stand-in image size), hello (the bare axum reference row), "
                        "db-reference (the tokio-postgres reference row), "
                        "c256 (the / row at 256 connections)")
    p.add_argument("--quick", action="store_true", help="3 s rows, 1 s warm-up, 1000 tasks, 3 start-ups")
    p.add_argument("--binary", help="use this app binary instead of building target/release/app")
    p.add_argument("--no-build", action="store_true", help="do not run cargo; use target/release/app as it is")
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
    if not NGINX:
        raise HarnessError("NGINX is not set: run bench/run.sh (it builds nginx with .ci/nginx.sh), or set NGINX "
                           "to an nginx 1.30 binary")
    for path in (NGINX, os.path.join(PG_BIN, "postgres"), os.path.join(PG_BIN, "initdb")):
        if not os.access(path, os.X_OK):
            raise HarnessError(f"{path} is missing")
    if not shutil.which("redis-server"):
        raise HarnessError("redis-server is missing")

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(), "host": platform.node(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "loadavg_start": loadavg(), "compilers_at_start": busy_compilers(),
            "connections": args.connections, "wrk_threads": args.threads, "duration_s": args.duration,
            "warmup_s": args.warmup, "db_pool_size": args.db_pool_size}
    log(f"load average at start {meta['loadavg_start']} ({meta['compilers_at_start']} compiler processes running)")

    args.binary = ensure_binary(args)
    args.hello = None if "hello" in args.skip or "http" in args.skip else ensure_hello(args)
    args.db_reference = None if "db-reference" in args.skip or "http" in args.skip else ensure_db_reference(args)

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


def effective_setting(binary, env, name):
    """A setting as the app reads it from `env` (`app check`'s `name value` line): its default is stated once, in
    the app."""
    out = subprocess.run([binary, "check"], env=env, capture_output=True, text=True, timeout=30).stdout
    values = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("  ") and line.strip())
    if name not in values:
        raise HarnessError(f"`{binary} check` does not print {name}: {out.strip()[-300:]}")
    return values[name].strip()


def benchmark(args, tmp, services, meta):
    stack = Stack(args, tmp, services)
    meta["db_readers"] = int(effective_setting(args.binary, stack.app_env(), "db_readers"))
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
    # An unfinished task, read from PostgreSQL on every GET: one waiting for its retry a day from now (no worker or
    # reconciler touches it before then).
    unfinished_id = stack.psql("INSERT INTO tasks (id, kind, payload, state, attempts, max_attempts, error, run_at) "
                               "VALUES (gen_random_uuid(), 'wordcount', '{\"text\": \"bench\"}', 'retrying', 1, 3, "
                               "'bench: waits for its retry', now() + interval '1 day') RETURNING id")

    http = []
    base = None
    if "http" not in args.skip:
        rows = [
            ("healthz_direct", "/healthz direct (no nginx)", f"http://127.0.0.1:{stack.app_port}/healthz",
             get_script),
            ("healthz_nginx", "/healthz", stack.nginx_url("/healthz"), get_script),
            ("root_nginx", "/ (status page, stores once a second)", stack.nginx_url("/"), get_script),
            ("get_task_nginx", "GET /api/tasks/{id} (finished: memory)", stack.nginx_url(f"/api/tasks/{task_id}"),
             get_script),
            ("get_unfinished_nginx", "GET /api/tasks/{id} (unfinished: PostgreSQL)",
             stack.nginx_url(f"/api/tasks/{unfinished_id}"), get_script),
            # The read path that asks PostgreSQL on every request; direct, against the tokio-postgres reference.
            ("list_tasks_direct", "GET /api/tasks?limit=10 direct",
             f"http://127.0.0.1:{stack.app_port}/api/tasks?limit=10", get_script),
            ("list_tasks_nginx", "GET /api/tasks?limit=10 (PostgreSQL)", stack.nginx_url("/api/tasks?limit=10"),
             get_script),
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
        if args.hello:
            # The ceiling of a Rust route here: the same axum and tokio, one route, no middleware, no logging.
            log("http: bare axum hello (reference, direct)")
            stack.start_hello(args.hello)
            r = http_row(stack, wrk, "bare axum hello direct (reference)", f"http://127.0.0.1:{stack.hello_port}/",
                         get_script, "-", args.warmup, args.duration)
            r["key"] = "hello_direct"
            http.append(r)
            stack.stop_hello()
        if args.db_reference:
            # The same query and JSON bytes as the app's list route, tuned as TechEmpower's fastest entries are.
            log("http: GET /api/tasks?limit=10 on the tokio-postgres reference (direct)")
            stack.start_db_reference(args.db_reference)
            path = "/api/tasks?limit=10"
            same = http_get(stack.db_reference_port, path)[1] == http_get(stack.app_port, path)[1]
            meta["db_reference_same_bytes"] = same
            log(f"http: the reference's answer is {'byte for byte' if same else 'NOT'} the app's")
            r = http_row(stack, wrk, "GET /api/tasks?limit=10 reference direct",
                         f"http://127.0.0.1:{stack.db_reference_port}{path}", get_script, "-", args.warmup,
                         args.duration)
            r["key"] = "db_reference_direct"
            http.append(r)
            stack.stop_db_reference()
        memory["serve_peak"], memory["serve_peak_sampled"] = app_rows("info")
        if "c256" not in args.skip:
            log("http: / at 256 connections (RUST_LOG=info)")
            wide = Wrk(tmp, args.threads, 256)
            r = http_row(stack, wide, "/ at 256 connections", stack.nginx_url("/"), wide.script("get256", ""),
                         "info", args.warmup, args.duration)
            r["key"] = "root_nginx_c256"
            r["connections"] = 256
            http.append(r)
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
    meta["nginx"] = f"{nginx_version()} with nginx/httpd.conf (SUBST lines replaced), access log to /dev/null"
    meta["experiments"] = experiments(args)
    results = {"meta": meta, "static_base_rps": base, "http": http, "tasks": tasks, "memory": memory,
               "postgres_stats": postgres_stats, "startup": startup, "sizes": {"binary": binary_size, "standin_image": image_size,
                                             "standin_note": note}}
    results["targets"] = judge(results)
    return results


def nginx_version():
    """`nginx/1.30.4` from `nginx -v` (which prints to stderr), and the binary's path."""
    p = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
    v = (p.stderr.strip().rsplit(" ", 1) or ["?"])[-1]
    return f"{v} ({NGINX})"


def experiments(args):
    """Departures from the project's configuration, for trying a fix; printed on the report's first line."""
    out = []
    out += [f"postgres -c {o}" for o in args.pg_option]
    out += [f"app env {e}" for e in args.app_env]
    if args.binary_given:
        out.append(f"binary {args.binary}")
    return out
