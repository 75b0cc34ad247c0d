"""Deploying version N+1 of the live stack with scripts/deploy.sh and rolling back to N, under constant load."""

import os
import time

from asset_bridging import check_both_served, later_releases, page_css
from edge_replacement import replace_twice
from harness import REPO, TAG, TAG_NEXT, check, inspect, log, run
from load import KeepAliveLoad, finished

DEPLOY = os.path.join(REPO, "scripts", "deploy.sh")
NEXT_COLUMN = "e2e_next_note"  # added by version N+1's extra migration (tests/e2e/run.sh)


def check_nothing_lost(prefix, figure, load, port, switches):
    """After a KeepAliveLoad through deploys: a FIGURE line (rate, counts, p99 before and during the switches),
    then 0 failed requests, 0 lost tasks, none run twice."""
    total, failed, other = load.counts()
    f = load.figures()
    results = finished(port, load.accepted, timeout=180)
    lost = [t for t, v in results.items() if not v or v.get("state") != "done"]
    twice = [t for t, v in results.items() if v and v.get("attempts") != 1]
    log(f"FIGURE {figure}: {f['rate']:.0f} requests/s from {f['clients']} keep-alive clients, {total} requests, "
        f"{len(failed)} failed (connection error or 5xx), {len(other)} other non-2xx, {f['resent']} sent again on "
        f"a new connection after the server closed one; p99 {f['p99_before_ms']:.0f} ms before the first switch, "
        f"{f['p99_during_ms']:.0f} ms during the switches ({f['during']} requests); tasks accepted "
        f"{len(load.accepted)}, lost {len(lost)}, run twice {len(twice)}; {'; '.join(switches)}")
    for line in load.failures[:10]:
        log(f"{prefix}: failed request at {line}")
    check(f"{prefix}: the load reached 300 requests/s from 16 clients (what this check is about)",
          f["rate"] >= 300 and f["clients"] >= 16, f"{f['rate']:.0f} requests/s")
    check(f"{prefix}: 0 connection errors and 0 5xx", total > 100 and not failed,
          f"{total} requests, failed {failed[:10]}")
    check(f"{prefix}: no other non-2xx answer", not other, f"{other[:10]}")
    check(f"{prefix}: 0 tasks lost, none run twice (attempts = 1)", not lost and not twice,
          f"accepted {len(load.accepted)}, lost {len(lost)}, attempts != 1: {len(twice)}")


def wait_for_load(load, samples=1000):
    """Until the load has made `samples` requests (the p99 before the first switch is taken from them), at most 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and load.counts()[0] < samples:
        load.stop.wait(0.1)


def images_of(live):
    out = {}
    for c in live.containers(all_=False):
        i = inspect(c)
        svc = i["Config"]["Labels"].get("com.docker.compose.service")
        out.setdefault(svc, set()).add(i["Config"]["Image"].rsplit(":", 1)[-1])
    return out


def has_next_column(live):
    p = live.exec("db", "psql", "-U", "app", "-d", "app", "-tAc",
                     f"SELECT count(*) FROM information_schema.columns WHERE table_name = 'tasks' "
                     f"AND column_name = '{NEXT_COLUMN}'", timeout=60)
    return p.stdout.strip() == "1"


def deploy(live, tag, extra_env=None):
    env = dict(live.env)
    env.update({"COMPOSE_PROJECT_NAME": live.project, "LIVE_FILE": live.file, "APP_VERSION": tag})
    env.update(extra_env or {})
    t = time.monotonic()
    p = run(["bash", DEPLOY, tag], timeout=600, env=env)
    return p, time.monotonic() - t


def refused_unsigned(live):
    before = images_of(live)
    p, _ = deploy(live, TAG_NEXT, {"REQUIRE_SIGNED_IMAGES": "1", "COSIGN_IDENTITY_REGEXP": "^https://github.com/x/"})
    reason = (p.stderr.strip().splitlines() or [""])[-1]
    check("deploy: REQUIRE_SIGNED_IMAGES=1 refuses an image it cannot verify, stack unchanged",
          p.returncode != 0 and "refused" in reason and images_of(live) == before, f"exit {p.returncode}: {reason}")


def deploy_and_rollback(live, port, old_task):
    if not TAG_NEXT:
        return
    refused_unsigned(live)
    switches = []
    css_n, css_next = page_css(port), None
    with KeepAliveLoad(port, old_task) as load:
        wait_for_load(load)
        for label, tag in (("deploy N+1", TAG_NEXT), ("roll back to N", TAG)):
            log(f"deploy: {label} starts")
            with load.switch(label):
                p, took = deploy(live, tag)
            for line in p.stderr.strip().splitlines()[-8:]:
                log(f"  {line}")
            images = images_of(live)
            ours = {s: images.get(s) for s in ("app", "httpd", "tasks")}
            ok = p.returncode == 0 and all(v == {tag} for v in ours.values())
            replicas = {s: len(live.containers(s, all_=False)) for s in ("app", "httpd", "tasks", "edge")}
            check(f"deploy: {label} with scripts/deploy.sh: every app, httpd and tasks replica on {tag}", ok,
                  f"{took:.1f} s; images {ours}; replicas {replicas}" +
                  ("" if p.returncode == 0 else ": " + p.stderr.strip()[-600:]))
            check(f"deploy: after {label}, replicas as before and the edge untouched",
                  replicas == {"app": 2, "httpd": 2, "tasks": 2, "edge": 1} and images.get("edge") == {TAG},
                  f"replicas {replicas}, edge {images.get('edge')}")
            if label == "deploy N+1":
                check("deploy: N+1's migration (a new column) was applied while N served", has_next_column(live))
                css_next = page_css(port)
                check_both_served(port, css_n, css_next)
            switches.append(f"{label} {took:.1f} s")
        # The edge itself, under the same load: a new image with a changed config, then back.
        switches += replace_twice(live, load, port, TAG_NEXT, TAG)
        time.sleep(1)  # the load keeps running one more second on the final version
    check_nothing_lost("deploy", "compose deploy under load", load, port, switches)
    check("deploy: the rollback kept N+1's column (N's migrate leaves a newer migration alone)",
          has_next_column(live))
    later_releases(live, port, css_n, css_next)
