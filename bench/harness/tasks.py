"""The task rows: tasks posted through nginx while a worker runs, and a backlog drained by a fresh worker; counted
from the rows in PostgreSQL (their own finished_at), not from wrk's answers."""

import os
import time

from .common import MIB, HarnessError, tail
from .procfs import cpu_seconds, proc_status

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
                       + tail(os.path.join(stack.tmp, "logs", stack.tasks_log or "tasks.log")))


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
