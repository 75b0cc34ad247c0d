"""The development stack: compose/dev.yml up, the page, a task, static files, down keeping the data."""

import time

from harness import (
    DEV_FILE,
    DEV_PORT,
    DEV_PROJECT,
    Stack,
    TAG,
    check,
    compose_env,
    get_task,
    inspect,
    log,
    manifest_names,
    post_task,
    request,
    run,
)


def phase_dev():
    env = compose_env({"DEV_VERSION": TAG, "DEV_HTTP_PORT": str(DEV_PORT)})
    dev = Stack(DEV_PROJECT, DEV_FILE, env)
    port = DEV_PORT
    log(f"dev: docker compose -f compose/dev.yml up --wait (project {DEV_PROJECT}, port {port})")
    t = time.monotonic()
    p = dev.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    if not check("dev: `up --wait` returns with the stack healthy", p.returncode == 0,
                 f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:]):
        dev.save_logs("dev-up")
        return
    httpd = inspect(dev.container("httpd"))["State"]
    check("dev: httpd one-shot (`nginx -t` on the staticlayer image) exited 0", httpd["ExitCode"] == 0,
          f"exit {httpd['ExitCode']}")

    r = request(port, "GET", "/")
    check("dev: / renders", r.status == 200 and "text/html" in r.headers.get("content-type", "")
          and b"<html" in r.body.lower(), f"{r.status} {r.headers.get('content-type')} {len(r.body)} bytes")
    r = request(port, "GET", "/readyz")
    check("dev: /readyz is 200", r.status == 200, repr(r))

    r = post_task(port, "wordcount", {"text": "a b a"})
    tid = (r.json() or {}).get("id")
    ok = r.status == 202 and tid and r.headers.get("location") == f"/api/tasks/{tid}"
    check("dev: POST /api/tasks -> 202 with Location", ok, repr(r))
    task = None
    if tid:
        g = get_task(port, tid, wait=20)
        task = g.json() or {}
        check("dev: the task reaches done", task.get("state") == "done",
              f"state={task.get('state')} result={task.get('result')} in {g.elapsed:.2f}s")

    plain, hashed = manifest_names()
    for name in (plain, hashed):
        r = request(port, "GET", f"/static/{name}")
        check(f"dev: the app serves /static/{name}", r.status == 200 and len(r.body) > 0,
              f"{r.status} {r.headers.get('content-type')} cache-control={r.headers.get('cache-control')}")

    log("dev: docker compose down (keeps volumes), then up --wait again")
    p = dev.compose("down", timeout=180)
    vols = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={DEV_PROJECT}"]).stdout.split()
    check("dev: `down` keeps the database volume", p.returncode == 0 and f"{DEV_PROJECT}_db-data" in vols,
          f"volumes: {' '.join(vols)}")
    t = time.monotonic()
    p = dev.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    check("dev: second `up --wait`", p.returncode == 0,
          f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1000:])
    if tid:
        g = get_task(port, tid)
        t2 = g.json() or {}
        check("dev: the second `up` still sees the earlier task", g.status == 200 and t2.get("state") == "done",
              f"{g.status} state={t2.get('state')}")
    dev.save_logs("dev")
    p = dev.compose("down", "--volumes", "--remove-orphans", timeout=180)
    check("dev: `down --volumes` removes the stack", p.returncode == 0, p.stderr.strip()[-300:] if p.returncode else "")
