"""The abuse limits of the live stack, against real containers: the edge's per-client rate limit on the routes that
create work (429 in the app's error shape, with Retry-After) and the app's bound on queued work (QUEUE_MAX_BACKLOG:
503 queue_full with Retry-After). In both, every task accepted is done in the end: a refusal loses nothing."""

import os
import threading
import time

from harness import (
    LIVE_PORT,
    check,
    get_task,
    headers_once,
    live_env_file,
    log,
    post_task,
    security_headers,
    wait_serving,
    wait_tasks_done,
)


def rate_limit(live):
    """POSTs from one client above RATE_LIMIT_TASKS: some are answered 429 with Retry-After in the app's JSON error
    shape, none fails otherwise, and every accepted task finishes."""
    low = {"RATE_LIMIT_TASKS": "5r/s", "RATE_LIMIT_BURST": "5"}
    p = live.compose("up", "--detach", "--no-deps", "--wait", "edge", env_extra=low, timeout=180)
    if not check("limits: edge recreated with RATE_LIMIT_TASKS=5r/s, burst 5", p.returncode == 0 and wait_serving(LIVE_PORT),
                 p.stderr.strip()[-300:]):
        return
    statuses, accepted, limited, lock = {}, [], [], threading.Lock()

    def client(n):
        for i in range(25):
            r = post_task(LIVE_PORT, "wordcount", {"text": f"rate {n} {i}"})
            with lock:
                statuses[r.status or "conn-error"] = statuses.get(r.status or "conn-error", 0) + 1
                if r.status == 202:
                    accepted.append(r.json()["id"])
                elif r.status == 429:
                    limited.append(r)

    t = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    took = time.monotonic() - t
    shape = [r for r in limited if (r.json() or {}).get("error") != "rate_limited"
             or r.headers.get("retry-after") != "1" or headers_once(r, security_headers())]
    print(f"FIGURE: rate limit 5r/s burst 5: {sum(statuses.values())} POSTs in {took:.1f}s from one address: "
          f"{statuses.get(202, 0)} accepted, {statuses.get(429, 0)} answered 429, other {dict(statuses)}", flush=True)
    check("limits: POSTs above the rate limit get 429, {\"error\":\"rate_limited\"}, Retry-After and the headers",
          limited and not shape and set(statuses) <= {202, 429}, f"{statuses}; bad 429s: {shape[:2]}")
    done = wait_tasks_done(LIVE_PORT, accepted, timeout=120)
    lost = [tid for tid, task in done.items() if not task or task.get("state") != "done"]
    check("limits: every task accepted under the rate limit finished", accepted and not lost,
          f"{len(accepted)} accepted, not done: {lost[:3]}")
    p = live.compose("up", "--detach", "--no-deps", "--wait", "edge", timeout=180)
    check("limits: edge back to the suite's rate limit", p.returncode == 0 and wait_serving(LIVE_PORT), p.stderr.strip()[-300:])


def queue_backlog(live):
    """With the workers stopped and QUEUE_MAX_BACKLOG=30, POSTs are accepted up to about the bound, then answered
    503 queue_full with Retry-After; once workers drain the queue every accepted task is done and POSTs pass again."""
    small = os.path.join(os.path.dirname(live_env_file()), "live-backlog.env")
    with open(live_env_file()) as src, open(small, "w") as dst:
        dst.write("".join(ln for ln in src if not ln.startswith("QUEUE_MAX_BACKLOG=")) + "QUEUE_MAX_BACKLOG=30\n")
    live.compose("stop", "tasks", timeout=120)
    p = live.compose("up", "--detach", "--no-deps", "--wait", "app", env_extra={"LIVE_ENV_FILE": small}, timeout=240)
    if not check("limits: app recreated with QUEUE_MAX_BACKLOG=30 and the workers stopped",
                 p.returncode == 0 and wait_serving(LIVE_PORT), p.stderr.strip()[-300:]):
        return
    accepted, refused, other = [], [], []
    for i in range(80):
        r = post_task(LIVE_PORT, "wordcount", {"text": f"backlog {i}"})
        if r.status == 202:
            accepted.append(r.json()["id"])
        elif r.status == 503:
            refused.append(r)
        else:
            other.append(repr(r))
    print(f"FIGURE: QUEUE_MAX_BACKLOG=30 (2 app replicas, workers stopped): 80 POSTs, {len(accepted)} accepted, "
          f"{len(refused)} answered 503 queue_full", flush=True)
    bad = [r for r in refused if (r.json() or {}).get("error") != "queue_full" or not r.headers.get("retry-after")]
    check("limits: above QUEUE_MAX_BACKLOG, POST /api/tasks gets 503 queue_full with Retry-After",
          refused and not bad and not other and 30 <= len(accepted) < 80,
          f"{len(accepted)} accepted, {len(refused)} refused, bad {bad[:2]}, other {other[:2]}")
    states = {(get_task(LIVE_PORT, tid).json() or {}).get("state") for tid in accepted}
    check("limits: every task accepted before the bound is still queued", states == {"queued"}, f"{states}")
    p = live.compose("up", "--detach", "--no-deps", "--wait", "tasks", timeout=240)
    done = wait_tasks_done(LIVE_PORT, accepted, timeout=180)
    lost = [tid for tid, task in done.items() if not task or task.get("state") != "done"]
    check("limits: once workers run, every accepted task is done (none lost)", p.returncode == 0 and not lost,
          f"{len(accepted)} accepted, not done: {lost[:3]}")
    deadline, r = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        r = post_task(LIVE_PORT, "wordcount", {"text": "after the backlog"})
        if r.status == 202:
            break
        time.sleep(0.5)
    check("limits: below the bound again, POST /api/tasks is accepted", r is not None and r.status == 202, repr(r))
    p = live.compose("up", "--detach", "--no-deps", "--wait", "app", timeout=240)
    check("limits: app back on the suite's settings", p.returncode == 0 and wait_serving(LIVE_PORT),
          p.stderr.strip()[-300:])
    log("limits: backlog check done")
