"""Faults injected into the running live stack, each printing a FIGURE line."""

import json
import re
import threading
import time

from harness import (
    Load,
    Resp,
    check,
    get_task,
    inspect,
    log,
    post_task,
    request,
    run,
    short,
    wait_http,
    wait_tasks_done,
)


def fault_db_restart(live, port):
    app = live.container("app")
    before = inspect(app)
    with Load(port) as load:
        time.sleep(2)
        t_stop = time.monotonic()
        run(["docker", "stop", "-t", "30", live.container("db")], check_rc=True)
        time.sleep(3)
        run(["docker", "start", live.container("db")], check_rc=True)
        rec = wait_http(port, "/readyz", 200, timeout=60)
        t_rec = time.monotonic()
        time.sleep(2)
    hist = load.histogram()
    during = load.histogram(since=t_stop)
    after = inspect(app)
    same_app = (before["State"]["StartedAt"] == after["State"]["StartedAt"] and after["RestartCount"] == 0)
    results = wait_tasks_done(port, load.accepted, timeout=90)
    lost = [t for t, v in results.items() if not v or v.get("state") != "done"]
    unexpected = {s: n for s, n in hist.items() if s not in (200, 202, 503)}
    log(f"FIGURE db restart: requests {sum(hist.values())} {hist}; db down 3.0 s, API answered 503 for "
        f"{load.outage():.1f} s; "
        f"recovered {rec if rec is None else round(rec, 2)} s after `docker start db` "
        f"({t_rec - t_stop:.1f} s after the stop); tasks accepted {len(load.accepted)}, lost {len(lost)}; "
        f"app restarts {after['RestartCount']}")
    check("fault db restart: 503 while the database is down", during.get(503, 0) > 0, f"{during}")
    check("fault db restart: only 200/202/503 answers (no 500, no dropped connection)", not unexpected,
          f"unexpected: {unexpected or 'none'}")
    check("fault db restart: /readyz recovers without restarting the app", rec is not None and same_app,
          f"recovered in {rec if rec is None else round(rec, 2)} s, app restarts {after['RestartCount']}")
    check("fault db restart: tasks lost = 0", not lost, f"accepted {len(load.accepted)}, lost {len(lost)}")


def fault_redis_restart(live, port):
    ids = []
    for i in range(8):
        r = post_task(port, "sleep", {"ms": 1500})
        if r.status == 202:
            ids.append(r.json()["id"])
    time.sleep(0.5)
    t = time.monotonic()
    run(["docker", "restart", "-t", "30", live.container("redis")], check_rc=True)
    rec = wait_http(port, "/readyz", 200, timeout=60)
    results = wait_tasks_done(port, ids, timeout=120)
    t_all = time.monotonic() - t
    lost = [k for k, v in results.items() if not v or v.get("state") != "done"]
    log(f"FIGURE redis restart: {len(ids)} sleep tasks queued/running; /readyz back "
        f"{rec if rec is None else round(rec, 2)} s after the restart; all finished {t_all:.1f} s after it; "
        f"tasks lost {len(lost)}")
    check("fault redis restart: posted 8 tasks before the restart", len(ids) == 8, f"{len(ids)}")
    check("fault redis restart: tasks lost = 0", not lost and len(ids) == 8,
          f"lost {len(lost)}: " + ", ".join(f"{k}={(v or {}).get('state')}" for k, v in results.items() if k in lost))
    check("fault redis restart: /readyz recovers", rec is not None, f"{rec}")


def fault_kill_tasks(live, port):
    r = post_task(port, "sleep", {"ms": 6000})
    tid = (r.json() or {}).get("id")
    if not check("fault kill tasks: sleep task accepted", r.status == 202 and tid, repr(r)):
        return
    deadline = time.monotonic() + 20
    state = None
    while time.monotonic() < deadline:
        state = (get_task(port, tid).json() or {}).get("state")
        if state == "running":
            break
        time.sleep(0.2)
    check("fault kill tasks: the task is running before the kill", state == "running", f"state={state}")
    # The replica that logged the task's start (two run; the other one is left alone).
    names = []
    deadline = time.monotonic() + 10
    while not names and time.monotonic() < deadline:  # the log line follows the state change within moments
        names = worker_starts(live).get(tid) or []
        if not names:
            time.sleep(0.2)
    by_name = {short(c): c for c in live.containers("tasks")}
    cid = by_name.get(names[0]) if names else None
    if not check("fault kill tasks: the replica running the task is known from its log", cid is not None,
                 f"started on {names}"):
        return
    t = time.monotonic()
    run(["docker", "kill", "-s", "KILL", cid], check_rc=True)
    time.sleep(1)
    st = inspect(cid)["State"]
    how = "restart policy"
    if not st["Running"]:
        # `docker kill` counts as a manual stop: the restart policy does not apply, so restart it as an operator.
        run(["docker", "start", cid], check_rc=True)
        how = "docker start"
    res = wait_tasks_done(port, [tid], timeout=120)[tid] or {}
    took = time.monotonic() - t
    log(f"FIGURE tasks SIGKILL: task {res.get('state')} {took:.1f} s after the kill "
        f"(restarted by {how}; attempts {res.get('attempts')}); tasks lost {0 if res.get('state') == 'done' else 1}")
    check("fault kill tasks: the task completes after the restart (tasks lost = 0)", res.get("state") == "done",
          f"state={res.get('state')} attempts={res.get('attempts')} after {took:.1f}s")


def fault_stop_app(live, port):
    r = post_task(port, "sleep", {"ms": 5000})
    tid = (r.json() or {}).get("id")
    if not check("fault stop app: sleep task accepted", r.status == 202 and tid, repr(r)):
        return
    out = {}
    polling = threading.Event()

    def slow():
        polling.set()
        out["r"] = get_task(port, tid, wait=25)

    th = threading.Thread(target=slow)
    th.start()
    # Evidence instead of a fixed pause: the long poll has been sent and the task is running (it
    # sleeps 5 s), so the stop below lands while the request is in flight.
    polling.wait(10)
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline and state != "running":
        state = (get_task(port, tid).json() or {}).get("state")
        if state != "running":
            time.sleep(0.05)
    if not check("fault stop app: the slow task is running before the stop", state == "running", f"state={state}"):
        th.join(60)
        return
    # Every app replica at once: whichever holds the long poll, it must finish it before it exits.
    cids = live.containers("app", all_=False)
    t = time.monotonic()
    p = run(["docker", "stop", "-t", "30", *cids])
    stop_took = time.monotonic() - t
    th.join(60)
    res = out.get("r") or Resp(error="no answer")
    body = res.json() or {}
    codes = [inspect(c)["State"]["ExitCode"] for c in cids]
    code = max(codes)
    run(["docker", "start", *cids], check_rc=True)
    back = wait_http(port, "/readyz", 200, timeout=90)
    log(f"FIGURE app stop during a slow request: request {res.status or res.error} after {res.elapsed:.1f} s "
        f"(task {body.get('state')}); `docker stop` of {len(cids)} replicas took {stop_took:.1f} s, exits {codes}; "
        f"app back {back if back is None else round(back, 1)} s after `docker start`")
    check("fault stop app: the in-flight slow request completes", res.status == 200 and bool(body),
          f"{res.status or res.error}, state={body.get('state')}")
    check("fault stop app: every replica exits cleanly on SIGTERM within the grace period",
          p.returncode == 0 and code == 0 and len(cids) == 2, f"exits {codes} after {stop_took:.1f}s")
    check("fault stop app: app serves again after start", back is not None, f"{back}")


def frontend_address(live, cid):
    """The address of container cid on the network it shares with httpd (the one nginx connects over)."""
    httpd_nets = set(inspect(live.container("httpd"))["NetworkSettings"]["Networks"])
    nets = inspect(cid)["NetworkSettings"]["Networks"]
    return next((n["IPAddress"] for name, n in nets.items() if name in httpd_nets and n.get("IPAddress")), None)


def nginx_reached(live, address):
    """Whether nginx's access log (JSON lines, `upstream` = the peers tried) names address as a peer."""
    return re.search(r'"upstream":"[^"]*\b' + re.escape(address) + r':8000\b', live.logs("httpd")) is not None


def fault_app_replaced(live, port):
    """One more app replica (a new address) is added, then the first one removed, while nginx keeps running: nginx
    follows the name (`server app:8000 resolve`) and retries a GET that meets the leaving replica on another."""
    httpd_before = inspect(live.container("httpd"))
    before = live.containers("app", all_=False)
    first = before[0]
    first_addr = frontend_address(live, first)
    p = live.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--no-deps", "--no-recreate",
                     "--scale", f"app={len(before) + 1}", "app", timeout=180)
    others = [c for c in live.containers("app", all_=False) if c not in before]
    second_addr = frontend_address(live, others[0]) if others else None
    if not check("replicas: one more app replica starts, at a new address",
                 p.returncode == 0 and second_addr and second_addr != first_addr,
                 f"{first_addr} and {second_addr}" + ("" if p.returncode == 0 else ": " + p.stderr.strip()[-500:])):
        return
    # nginx re-resolves `app` every few seconds (valid=2s): the new replica gets requests without a reload.
    t = time.monotonic()
    seen = None
    while time.monotonic() - t < 30:
        for _ in range(4):
            request(port, "GET", "/readyz", timeout=5)
        if nginx_reached(live, second_addr):
            seen = time.monotonic() - t
            break
    # Now the first replica goes away under load (as a deploy removes the old one): no request may fail.
    with Load(port, threads=2, post_every=1000) as load:
        t_stop = time.monotonic()
        run(["docker", "stop", "-t", "30", first], check_rc=True)
        run(["docker", "rm", first], check_rc=True)
        took = time.monotonic() - t_stop
        # A measurement window, not a wait for a condition: nginx may hold the old address until its next lookup
        # (valid=2s, plus the 1 s its timer adds); requests sent to it meanwhile must be retried on the new one.
        time.sleep(5)
    hist = load.histogram()
    for line in load.failures[:10]:
        log(f"replicas: failed request at {line}")
    retried = len(re.findall(r'"upstream":"[^"]*\b' + re.escape(first_addr) + r':8000, [^"]*\b' +
                             re.escape(second_addr) + r':8000\b', live.logs("httpd")))
    httpd_after = inspect(live.container("httpd"))
    same_httpd = (httpd_before["Id"] == httpd_after["Id"]
                  and httpd_before["State"]["StartedAt"] == httpd_after["State"]["StartedAt"])
    log(f"FIGURE app replica replaced: {first_addr} -> {second_addr}; nginx sent requests to the new address "
        f"{seen if seen is None else round(seen, 1)} s after it was healthy; the old one stopped and removed in "
        f"{took:.1f} s under load: {sum(hist.values())} requests in {took + 5:.1f} s {hist}, {retried} of them "
        f"retried from the old address on the new one; nginx container "
        f"{'the same, not restarted' if same_httpd else 'RESTARTED'}")
    check("replicas: nginx sends requests to the new app replica without a restart (resolve)",
          seen is not None and same_httpd, f"after {seen} s, same nginx container: {same_httpd}")
    check("replicas: removing the old app replica under load costs no answer (GETs retried on the other)",
          set(hist) == {200}, f"{hist}")


def worker_starts(live):
    """{task_id: [container names that logged 'task started']} from the JSON logs of every tasks container."""
    starts = {}
    for cid in live.containers("tasks"):
        name = short(cid)
        p = run(["docker", "logs", cid])
        for line in (p.stdout + p.stderr).splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                j = json.loads(line)
            except ValueError:
                continue
            msg = j.get("fields", {}).get("message") or j.get("message")
            span = j.get("span") or {}
            if msg == "task started" and span.get("task_id"):
                starts.setdefault(span["task_id"], []).append(name)
    return starts


def fault_two_workers(live, port):
    p = live.compose("up", "--detach", "--wait", "--wait-timeout", "120", "--no-recreate", "--scale", "tasks=2",
                     timeout=200)
    n = len(live.containers("tasks", all_=False))
    if not check("replicas: two tasks replicas run (the live default)", p.returncode == 0 and n == 2,
                 f"{n} running" + ("" if p.returncode == 0 else ": " + p.stderr.strip()[-500:])):
        return
    ids = []
    for i in range(16):
        r = post_task(port, "sleep", {"ms": 400})
        if r.status == 202:
            ids.append(r.json()["id"])
    results = wait_tasks_done(port, ids, timeout=120)
    done = [k for k, v in results.items() if v and v.get("state") == "done"]
    multi_attempt = [k for k, v in results.items() if v and v.get("attempts") != 1]
    time.sleep(1)
    starts = worker_starts(live)
    twice = {k: v for k, v in starts.items() if k in ids and len(v) != 1}
    per = {}
    for k in ids:
        for c in starts.get(k, []):
            per[c] = per.get(c, 0) + 1
    log(f"FIGURE two workers: {len(done)}/{len(ids)} done; started per replica {per}; "
        f"started more than once {len(twice)}; attempts != 1: {len(multi_attempt)}; tasks lost {len(ids) - len(done)}")
    check("replicas: all 16 tasks done (tasks lost = 0)", len(done) == 16, f"{len(done)}/16")
    check("replicas: no task ran twice (one 'task started' each, attempts = 1)",
          not twice and not multi_attempt and len([k for k in ids if k in starts]) == len(ids),
          f"twice: {len(twice)}, attempts!=1: {len(multi_attempt)}, seen in logs {len([k for k in ids if k in starts])}")
    check("replicas: both replicas took work", len(per) == 2, f"{per}")
