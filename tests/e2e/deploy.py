"""Deploying version N+1 of the live stack with scripts/deploy.sh and rolling back to N, under constant load."""

import os
import threading
import time

from harness import (
    REPO,
    T0,
    describe_failure,
    TAG,
    TAG_NEXT,
    check,
    inspect,
    log,
    manifest_names,
    post_task,
    request,
    run,
    wait_tasks_done,
)

DEPLOY = os.path.join(REPO, "scripts", "deploy.sh")
NEXT_COLUMN = "e2e_next_note"  # added by version N+1's extra migration (tests/e2e/run.sh)


class MixedLoad:
    """About 30 requests/s through nginx from 3 threads: /, GET /api/tasks/{id}, POST /api/tasks, a static file."""

    def __init__(self, port, known_task):
        _, hashed = manifest_names()
        self.port, self.static = port, f"/static/{hashed}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples = []  # (kind, status or "conn-error")
        self.failures = []  # what each failed request got, to tell which layer answered
        self.accepted = [known_task] if known_task else []
        self.threads = []

    def _one(self, i):
        kind = ("page", "get", "post", "static")[i % 4]
        if kind == "page":
            r = request(self.port, "GET", "/", timeout=20)
        elif kind == "static":
            r = request(self.port, "GET", self.static, timeout=20)
        elif kind == "post":
            r = post_task(self.port, "wordcount", {"text": f"deploy load {i}"})
            if r.status == 202 and r.json():
                with self.lock:
                    self.accepted.append(r.json()["id"])
        else:
            with self.lock:
                tid = self.accepted[-1] if self.accepted else None
            r = request(self.port, "GET", f"/api/tasks/{tid}" if tid else "/readyz", timeout=20)
        with self.lock:
            self.samples.append((kind, r.status or "conn-error"))
            if not r.status or r.status >= 500:
                self.failures.append(describe_failure(kind, r, time.monotonic() - T0))

    def _loop(self, n):
        i = n
        while not self.stop.is_set():
            self._one(i)
            i += 3
            self.stop.wait(0.1)

    def __enter__(self):
        for n in range(3):
            t = threading.Thread(target=self._loop, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def counts(self):
        with self.lock:
            samples = list(self.samples)
        failed = [f"{k} {s}" for k, s in samples if s == "conn-error" or (isinstance(s, int) and s >= 500)]
        other = [s for _, s in samples if isinstance(s, int) and s not in (200, 202) and s < 500]
        return len(samples), failed, other


def check_nothing_lost(prefix, figure, load, port, switches):
    """After a MixedLoad through deploys: a FIGURE line, then 0 failed requests, 0 lost tasks, none run twice."""
    total, failed, other = load.counts()
    results = wait_tasks_done(port, load.accepted, timeout=120)
    lost = [t for t, v in results.items() if not v or v.get("state") != "done"]
    twice = [t for t, v in results.items() if v and v.get("attempts") != 1]
    log(f"FIGURE {figure}: {total} requests, {len(failed)} failed (connection error or 5xx), {len(other)} other "
        f"non-2xx; tasks accepted {len(load.accepted)}, lost {len(lost)}, run twice {len(twice)}; "
        f"{'; '.join(switches)}")
    for line in load.failures[:10]:
        log(f"{prefix}: failed request at {line}")
    check(f"{prefix}: 0 connection errors and 0 5xx", total > 100 and not failed,
          f"{total} requests, failed {failed[:10]}")
    check(f"{prefix}: no other non-2xx answer", not other, f"{other[:10]}")
    check(f"{prefix}: 0 tasks lost, none run twice (attempts = 1)", not lost and not twice,
          f"accepted {len(load.accepted)}, lost {len(lost)}, attempts != 1: {len(twice)}")


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
    with MixedLoad(port, old_task) as load:
        for label, tag in (("deploy N+1", TAG_NEXT), ("roll back to N", TAG)):
            log(f"deploy: {label} starts")
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
            switches.append(f"{label} {took:.1f} s")
        time.sleep(1)  # the load keeps running one more second on the final version
    check_nothing_lost("deploy", "compose deploy under load", load, port, switches)
    check("deploy: the rollback kept N+1's column (N's migrate leaves a newer migration alone)",
          has_next_column(live))
