"""Clients that send POST /api/tasks with an Idempotency-Key and retry it until accepted, while an app replica is
SIGKILLed under them: every request ends accepted, each key names exactly one task, nothing is queued twice, and
every task finishes. Every fifth request is also sent once more after its 202, as a client that lost the answer
would: the repeat must name the same task, marked Idempotent-Replayed."""

import threading
import time
import uuid

from harness import check, inspect, log, request, run, wait_tasks_done

CLIENTS = 4
TEXT = "keyed kill"


class KeyedClients:
    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results = {}  # key -> (task id or None, [answers], replay ok or None)
        self.threads = []

    def _send(self, key, text):
        return request(self.port, "POST", "/api/tasks", {"kind": "wordcount", "payload": {"text": text}},
                       headers={"Idempotency-Key": key}, timeout=20)

    def _one(self, key, text, repeat):
        answers, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            r = self._send(key, text)
            answers.append(r.status or "conn-error")
            if r.status == 202:
                tid = r.json()["id"]
                replay = None
                if repeat:
                    again = self._send(key, text)
                    replay = (again.status == 202 and again.json()["id"] == tid
                              and again.headers.get("idempotent-replayed") == "true")
                return tid, answers, replay
            # A client's back-off between its retries of one request, not a wait for a condition.
            time.sleep(0.2)
        return None, answers, None

    def _loop(self, n):
        i = 0
        while not self.stop.is_set():
            key = f"e2e-{n}-{i}-{uuid.uuid4()}"
            outcome = self._one(key, f"{TEXT} {n} {i}", repeat=i % 5 == 0)
            with self.lock:
                self.results[key] = outcome
            i += 1
            self.stop.wait(0.05)

    def count(self):
        with self.lock:
            return len(self.results)

    def wait_for(self, n, timeout):
        """Until n requests have ended (accepted or given up), or timeout."""
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            self.stop.wait(0.1)
        return self.count() >= n

    def __enter__(self):
        for n in range(CLIENTS):
            t = threading.Thread(target=self._loop, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(90)


def fault_kill_app_keyed(live, port):
    apps = live.containers("app", all_=False)
    if not check("keyed retries: two app replicas serve", len(apps) >= 2, f"{apps}"):
        return
    victim = apps[0]
    with KeyedClients(port) as clients:
        started = clients.wait_for(40, timeout=60)
        run(["docker", "kill", "-s", "KILL", victim], check_rc=True)
        at_kill = clients.count()
        after = clients.wait_for(at_kill + 80, timeout=90)
    if not inspect(victim)["State"]["Running"]:
        # `docker kill` counts as a manual stop: the restart policy does not apply, so restart it as an operator.
        run(["docker", "start", victim], check_rc=True)
    results = dict(clients.results)
    lost = [k for k, (tid, _, _) in results.items() if tid is None]
    retried = {k: a for k, (tid, a, _) in results.items() if len(a) > 1}
    replays = [ok for _, _, ok in results.values() if ok is not None]
    ids = [tid for tid, _, _ in results.values() if tid]
    finished = wait_tasks_done(port, ids, timeout=180)
    unfinished = [t for t, v in finished.items() if not v or v.get("state") != "done"]
    p = live.exec("db", "psql", "-U", "app", "-d", "app", "-tAc",
                  f"SELECT count(*), count(DISTINCT payload->>'text') FROM tasks "
                  f"WHERE payload->>'text' LIKE '{TEXT} %'", timeout=60)
    rows, distinct = (int(x) for x in (p.stdout.strip() or "-1|-1").split("|"))
    failed_answers = sorted({str(s) for a in retried.values() for s in a if s != 202})
    log(f"FIGURE keyed retries through an app SIGKILL: {len(results)} requests from {CLIENTS} clients "
        f"({at_kill} before the kill), {len(retried)} retried with their key (answers before the 202: "
        f"{failed_answers or 'none'}), {len(replays)} sent again after their 202; tasks in PostgreSQL {rows} for "
        f"{distinct} requests; lost {len(lost)}, unfinished {len(unfinished)}")
    check("keyed retries: load ran before and after the kill", started and after,
          f"{at_kill} before, {len(results)} in all")
    check("keyed retries: every request ends accepted (0 lost)", not lost, f"{len(lost)} gave up: {lost[:5]}")
    check("keyed retries: a repeat after the 202 names the same task, marked replayed",
          replays and all(replays), f"{replays.count(False)} of {len(replays)} did not")
    check("keyed retries: one task per request, none duplicated", rows == distinct == len(results),
          f"{rows} rows, {distinct} distinct requests, {len(results)} sent")
    check("keyed retries: every accepted task finishes", not unfinished, f"{len(unfinished)}: {unfinished[:5]}")
