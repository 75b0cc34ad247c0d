"""Deploying version N+1 of the live stack and rolling back to N."""

import time

from harness import (
    Load,
    Resp,
    TAG,
    TAG_NEXT,
    check,
    get_task,
    inspect,
    log,
    wait_http,
)


def deploy_and_rollback(live, port, old_task):
    if not TAG_NEXT:
        return
    results = []
    for label, tag in (("deploy N+1", TAG_NEXT), ("roll back to N", TAG)):
        with Load(port, threads=1, post_every=1000) as load:
            t = time.monotonic()
            p = live.compose("up", "--detach", "--wait", "--wait-timeout", "180", timeout=240,
                             env_extra={"APP_VERSION": tag})
            took = time.monotonic() - t
            time.sleep(1)
        hist = load.histogram()
        images = {inspect(c)["Config"]["Labels"].get("com.docker.compose.service"): inspect(c)["Config"]["Image"]
                  for c in live.containers(all_=False)}
        ours = {s: i for s, i in images.items() if s in ("app", "tasks", "httpd")}
        ok_tag = all(i.endswith(":" + tag) for i in ours.values()) and len(ours) == 3
        g = get_task(port, old_task) if old_task else Resp(status=200, body=b"{}")
        ok = p.returncode == 0 and ok_tag and g.status == 200 and wait_http(port, "/readyz", 200, 30) is not None
        fails = sum(n for s, n in hist.items() if s != 200)
        log(f"FIGURE {label} (APP_VERSION={tag}): `up --wait` {took:.1f} s; during it {sum(hist.values())} requests, "
            f"{fails} not 200 {hist}, unavailable for {load.outage():.1f} s (one app and one httpd replica)")
        results.append(check(f"live: {label} (APP_VERSION={tag}) with data kept", ok,
                             f"images {ours}; earlier task {g.status}" +
                             ("" if p.returncode == 0 else ": " + p.stderr.strip()[-500:])))
