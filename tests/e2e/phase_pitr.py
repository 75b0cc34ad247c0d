"""Point-in-time recovery and off-host copies on the live stack (COMPOSE_PROFILES=offsite, an SFTP remote that the
phase starts on the stack's offsite network): while a client writes a task every 100 ms, a restore to a moment
between two base backups holds every write up to it and none after; after the database volume is destroyed,
`restore --latest` brings back the writes up to the loss; a stalled WAL stream and a stopped remote turn the backup
service unhealthy and show in /readyz while the app keeps serving; and with both volumes gone (a new host), `fetch` plus `restore
--latest` recovers from the remote alone."""

import datetime
import os
import threading
import time

from day2 import CLEAN_ENV, recorded_deployment
from harness import (
    LIVE_FILE,
    LIVE_PORT,
    LIVE_PROJECT,
    REPO,
    SECRETS_DIR,
    TAG,
    Stack,
    check,
    live_env,
    log,
    post_task,
    request,
    run,
    wait_serving,
)
from phase_backup import backup_cmd

RCLONE_IMAGE = os.environ.get("RCLONE_IMAGE", "docker-sample-test/rclone:1.60")
REMOTE = f"{LIVE_PROJECT}-remote"
REMOTE_PASS = "e2e-remote-password"
WAL_SWITCH, OFFSITE_EVERY = 5, 2   # seconds: the off-host copy's delay, kept short for the test
WRITE_EVERY = 0.1


class Writer:
    """A client that posts a task every 100 ms and records each acknowledged (202) one: (id, time acknowledged)."""

    def __init__(self, port):
        self.port, self.acked, self.failed = port, [], 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self):
        n = len(self.acked)
        while not self._stop.is_set():
            started = time.monotonic()
            r = post_task(self.port, "wordcount", {"text": f"write {n}"})
            tid = (r.json() or {}).get("id") if r.status == 202 else None
            if tid:
                self.acked.append((tid, time.time()))
            else:
                self.failed += 1
            n += 1
            self._stop.wait(max(0.0, WRITE_EVERY - (time.monotonic() - started)))

    def wait_acked(self, n, timeout=60):
        """Until n more writes are acknowledged (the writes a step needs, not a fixed sleep)."""
        want, deadline = len(self.acked) + n, time.monotonic() + timeout
        while len(self.acked) < want and time.monotonic() < deadline:
            self._stop.wait(0.05)
        return len(self.acked) >= want


def tasks_in_db(stack):
    """{task id: created_at (seconds since the epoch)} of the live database."""
    p = stack.exec("db", "sh", "-c", 'psql -X -At -F " " -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
                   '-c "SELECT id, extract(epoch FROM created_at) FROM tasks"')
    if p.returncode != 0:
        raise RuntimeError(f"psql in db failed: {p.stderr.strip()[-300:]}")
    return {line.split()[0]: float(line.split()[1]) for line in p.stdout.splitlines() if line.strip()}


def health(stack, service):
    ids = stack.containers(service, all_=False)
    if not ids:
        return "gone"
    return run(["docker", "inspect", "-f", "{{.State.Health.Status}}", ids[0]]).stdout.strip()


def wait_for(what, timeout, step=1.0):
    deadline, t0 = time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline:
        if what():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def start_remote(network):
    """rclone's SFTP server on the stack's offsite network, as `remote`: a real remote, in its own container."""
    run(["docker", "rm", "-f", REMOTE], timeout=60)
    return run(["docker", "run", "-d", "--name", REMOTE, "--network", network, "--network-alias", "remote",
                "--entrypoint", "rclone", RCLONE_IMAGE, "serve", "sftp", "/data", "--addr", ":2022",
                "--user", "backup", "--pass", REMOTE_PASS], timeout=60)


def write_rclone_conf():
    p = run(["docker", "run", "--rm", "--entrypoint", "rclone", RCLONE_IMAGE, "obscure", REMOTE_PASS], timeout=60)
    path = os.path.join(SECRETS_DIR, "rclone.conf")
    with open(path, "w") as f:
        f.write(f"[remote]\ntype = sftp\nhost = remote\nport = 2022\nuser = backup\npass = {p.stdout.strip()}\n")
    os.chmod(path, 0o644)   # read by the offsite service's uid 999 (Compose mounts the file as it is)
    return p.returncode == 0


def prefix_loss(acked, present):
    """The acknowledged writes missing from the restored database, and whether they are all at the end (a restore
    may lose the newest writes, never one in the middle)."""
    missing = [i for i, (tid, _) in enumerate(acked) if tid not in present]
    return missing, all(i >= len(acked) - len(missing) for i in missing)


def restore_latest(env, stack, acked, what):
    """`scripts/backup.sh restore --latest`, then the acknowledged writes the database lacks: (missing, seconds), or
    None when the restore failed."""
    p, took = backup_cmd(env, "restore", "--latest")
    ok = check(f"pitr: `scripts/backup.sh restore --latest` {what}", p.returncode == 0 and "is live" in p.stdout,
               (p.stdout + p.stderr).strip()[-800:])
    wait_serving(port=LIVE_PORT)
    if not ok:
        return None
    missing, at_end = prefix_loss(acked, set(tasks_in_db(stack)))
    check(f"pitr: the {len(acked)} acknowledged writes are back but for the newest, none missing in between",
          at_end and len(missing) < len(acked), f"missing {len(missing)} of {len(acked)}")
    return missing, took


def phase_pitr():
    with recorded_deployment():
        try:
            pitr_phase()
        finally:
            run(["docker", "rm", "-f", REMOTE], timeout=60)


def pitr_phase():
    env = live_env({"COMPOSE_PROJECT_NAME": LIVE_PROJECT, "COMPOSE_FILE": LIVE_FILE, "COMPOSE_PROFILES": "offsite",
                    "BACKUP_REMOTE": "remote:backups", "BACKUP_OFFSITE_EVERY": str(OFFSITE_EVERY),
                    "BACKUP_WAL_SWITCH": str(WAL_SWITCH), "BACKUP_MAX_LAG": "10", "RCLONE_IMAGE": RCLONE_IMAGE})
    stack = Stack(LIVE_PROJECT, LIVE_FILE, env)
    port, network = LIVE_PORT, f"{LIVE_PROJECT}_offsite"
    if not check("pitr: the remote's rclone.conf is written (the rclone_conf secret)", write_rclone_conf()):
        return
    # The remote joins the stack's offsite network, which Compose creates: containers first, then the remote.
    p = stack.compose("up", "--no-start", timeout=300)
    r = start_remote(network) if p.returncode == 0 else p
    if not check("pitr: the SFTP remote runs on the stack's offsite network", r.returncode == 0,
                 (p.stderr + r.stderr).strip()[-500:]):
        return
    t = time.monotonic()
    p = run(["bash", os.path.join(REPO, "scripts", "deploy.sh"), TAG], timeout=400, env=env)
    if not check("pitr: `scripts/deploy.sh` with COMPOSE_PROFILES=offsite returns with every service healthy",
                 p.returncode == 0, f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:]):
        stack.save_logs("pitr-up")
        return
    env = CLEAN_ENV   # from here on the README's commands, with what compose/.env recorded
    writer = Writer(port)
    try:
        to_a_moment(stack, env, writer)
        after_volume_loss(stack, env, writer)
        stalled_stream_and_stopped_remote(stack, port, writer)
        from_the_remote_alone(stack, env, writer, network)
    finally:
        path = stack.save_logs("pitr")
        log(f"pitr: logs saved to {path}")
        run(["docker", "network", "disconnect", "-f", network, REMOTE], timeout=60)
        p = stack.compose("down", "--volumes", "--remove-orphans", timeout=180)
        check("pitr: `down --volumes` at the end", p.returncode == 0, p.stderr.strip()[-300:])


def to_a_moment(stack, env, writer):
    with writer:
        writer.wait_acked(20)
        p1, _ = backup_cmd(env, "now")
        b1_done = time.time()
        writer.wait_acked(40)
        b2_start = time.time()
        p2, _ = backup_cmd(env, "now")
        writer.wait_acked(10)
    ok = check("pitr: two backups (dump + base backup each) taken while the client writes",
               p1.returncode == 0 and p2.returncode == 0 and "wrote base backup" in p1.stdout + p2.stdout,
               (p1.stdout + p1.stderr + p2.stdout + p2.stderr).strip()[-600:])
    if not ok:
        return
    p, _ = backup_cmd(env, "list")
    check("pitr: `list` shows the point-in-time window", p.returncode == 0 and "streaming now" in p.stdout,
          p.stdout.strip()[-400:])
    rows = sorted(tasks_in_db(stack).items(), key=lambda kv: kv[1])
    # A moment between two base backups, halfway between two writes: unambiguous whatever the commit's delay.
    pairs = [(a, b) for a, b in zip(rows, rows[1:]) if b1_done + 0.5 < a[1] and b[1] < b2_start - 0.5
             and b[1] - a[1] > 0.05]
    if not check("pitr: writes between the two base backups to aim at", len(pairs) > 2, f"{len(pairs)} pairs"):
        return
    a, b = pairs[len(pairs) // 2]
    target = (a[1] + b[1]) / 2
    text = datetime.datetime.fromtimestamp(target, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    before = {tid for tid, at in rows if at < target}

    running = lambda: set(stack.compose("ps", "--services", "--status", "running").stdout.split())
    up_before = running()
    p, _ = backup_cmd(env, "restore", "--to", "2000-01-01 00:00:00")
    err = p.stderr.strip().splitlines()
    check("pitr: a moment outside the window is refused in one line; nothing was stopped",
          p.returncode != 0 and len(err) == 1 and "outside the recoverable window" in err[0]
          and running() == up_before, f"rc={p.returncode} stderr={err}")

    p, took = backup_cmd(env, "restore", "--to", text)
    ok = check(f"pitr: `scripts/backup.sh restore --to '{text}'` swaps the recovered database in",
               p.returncode == 0 and "is live" in p.stdout, (p.stdout + p.stderr).strip()[-800:])
    wait_serving(port=LIVE_PORT)
    if ok:
        back = set(tasks_in_db(stack))
        check(f"pitr: the database holds every write up to the moment ({len(before)}) and none after "
              f"({len(rows) - len(before)})", back == before,
              f"missing {len(before - back)}, after the moment {len(back - before)}")
        log(f"FIGURE pitr restore to a moment ({len(before)} of {len(rows)} writes kept): {took:.1f} s")


def after_volume_loss(stack, env, writer):
    writer.acked.clear()
    with writer:
        writer.wait_acked(30)
        db = stack.containers("db", all_=False)
        p = run(["docker", "kill", db[0]], timeout=60) if db else None
        lost_at = time.time()
        writer.wait_acked(1, timeout=1.5)   # the client goes on writing; nothing can be acknowledged now
    acked = [(tid, at) for tid, at in writer.acked if at <= lost_at]
    volume = f"{LIVE_PROJECT}_live-db"
    rm = stack.compose("rm", "--force", "--stop", "db", timeout=120)
    vol = run(["docker", "volume", "rm", volume], timeout=60)
    ok = check("pitr: the database is killed and its volume destroyed while the client writes",
               p is not None and p.returncode == 0 and rm.returncode == 0 and vol.returncode == 0,
               f"{vol.stderr.strip()[-300:]}")
    p = stack.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    ok = check("pitr: `up --wait` starts a new, empty database", ok and p.returncode == 0 and not tasks_in_db(stack),
               p.stderr.strip()[-600:]) and ok
    if not ok:
        return
    back = restore_latest(env, stack, acked, "swaps the lost database's last state in")
    if back is None:
        return
    missing, took = back
    lost_s = len(missing) * WRITE_EVERY
    log(f"FIGURE pitr after the database volume was lost: {len(missing)} of {len(acked)} acknowledged writes lost "
        f"({lost_s:.1f} s of writes at one per 100 ms; target <= 1 s: {'PASS' if lost_s <= 1.0 else 'MISS'}), "
        f"`restore --latest` {took:.1f} s (target <= 120 s: {'PASS' if took <= 120 else 'MISS'})")


RECEIVER_PID = ('for d in /proc/[0-9]*; do case "$({ tr "\\0" " " < "$d/cmdline"; } 2>/dev/null)" in '
                'pg_receivewal*) echo "${d#/proc/}" ;; esac; done')


def stalled_stream_and_stopped_remote(stack, port, writer):
    """The WAL receiver frozen (SIGSTOP) while the client writes, and the remote stopped: both show."""
    pids = stack.exec("backup", "sh", "-c", RECEIVER_PID).stdout.split()
    frozen = bool(pids) and stack.exec("backup", "sh", "-c", f"kill -STOP {pids[0]}").returncode == 0
    run(["docker", "stop", REMOTE], timeout=60)
    with writer:
        unhealthy = wait_for(lambda: health(stack, "backup") == "unhealthy", 120)
        readyz = request(port, "GET", "/readyz")
        r = post_task(port, "wordcount", {"text": "while the stream stalls and the remote is down"})
    backup = (readyz.json() or {}).get("backup") or {}
    problem = backup.get("problem") or ""
    check("pitr: a stalled WAL stream and a stopped remote turn the backup service unhealthy",
          frozen and unhealthy is not None,
          f"after {unhealthy:.0f}s" if unhealthy is not None else f"receiver {pids} health {health(stack, 'backup')}")
    check("pitr: /readyz names both (WAL lag over BACKUP_MAX_LAG, the failed off-host copy) and stays 200; the app "
          "keeps writing", readyz.status == 200 and backup.get("ok") is False and "WAL streaming is" in problem
          and (backup.get("wal_lag_seconds") or 0) > 10 and "off-host" in problem
          and backup.get("offsite") == "failing" and r.status == 202,
          f"readyz {readyz.status} backup={backup} post {r.status}")
    if pids:
        stack.exec("backup", "sh", "-c", f"kill -CONT {pids[0]}")
    run(["docker", "start", REMOTE], timeout=60)
    healthy = wait_for(lambda: health(stack, "backup") == "healthy", 150)
    check("pitr: the stream resumed and the remote back, the backup service is healthy again", healthy is not None,
          f"after {healthy:.0f}s" if healthy is not None else f"health {health(stack, 'backup')}")


def from_the_remote_alone(stack, env, writer, network):
    writer.acked.clear()
    with writer:
        writer.wait_acked(100)
        gone_at = time.time()
        p = stack.compose("kill", timeout=120)   # the host is gone: nothing shuts down cleanly
    acked = [(tid, at) for tid, at in writer.acked if at <= gone_at]
    run(["docker", "network", "disconnect", "-f", network, REMOTE], timeout=60)
    down = stack.compose("down", "--volumes", "--remove-orphans", timeout=180)
    left = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={LIVE_PROJECT}"])
    ok = check("pitr: the stack killed and removed with its volumes, the backups' included (a new host)",
               p.returncode == 0 and down.returncode == 0 and not left.stdout.strip(),
               (down.stderr + left.stdout).strip()[-300:])
    p = stack.compose("up", "--no-start", timeout=300)
    c = run(["docker", "network", "connect", "--alias", "remote", network, REMOTE], timeout=60)
    up = stack.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    ok = check("pitr: the stack up again on empty volumes, the remote reachable",
               ok and p.returncode == 0 and c.returncode == 0 and up.returncode == 0,
               (p.stderr + c.stderr + up.stderr).strip()[-600:]) and ok
    if not ok:
        return
    p, fetch_s = backup_cmd(env, "fetch")
    if not check("pitr: `scripts/backup.sh fetch` copies the remote's backups into the new backup volume",
                 p.returncode == 0, (p.stdout + p.stderr).strip()[-600:]):
        return
    back = restore_latest(env, stack, acked, "recovers from the remote's copy alone")
    if back is None:
        return
    missing, took = back
    took += fetch_s
    log(f"FIGURE pitr from the remote alone (both volumes lost): {len(missing)} of {len(acked)} acknowledged writes "
        f"lost ({len(missing) * WRITE_EVERY:.1f} s of writes; BACKUP_WAL_SWITCH {WAL_SWITCH} s + "
        f"BACKUP_OFFSITE_EVERY {OFFSITE_EVERY} s + the gzip and the copy expected), `fetch` + `restore --latest` "
        f"{took:.1f} s")
