"""Backups of the live stack: tasks -> scripts/backup.sh now -> `down --volumes` -> `up` -> restore -> every task is
back with its result and the tasks queued at backup time are done by the worker; refusals change nothing."""

import os
import subprocess
import time

from day2 import CLEAN_ENV, check_recorded, recorded_deployment
from harness import (
    LIVE_FILE,
    LIVE_PORT,
    LIVE_PROJECT,
    LOG_DIR,
    REPO,
    Stack,
    TAG,
    check,
    live_env,
    get_task,
    log,
    post_task,
    request,
    run,
    wait_serving,
    wait_tasks_done,
)

DONE_TASKS = 300   # done before the backup, with a result each
QUEUED_TASKS = 20  # queued (worker stopped) when the backup is taken
SCRIPT = os.path.join(REPO, "scripts", "backup.sh")


def backup_cmd(env, *args, timeout=300):
    """`scripts/backup.sh ARGS` as the README writes it, from the repository root."""
    t = time.monotonic()
    p = subprocess.run(["scripts/backup.sh", *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t


def up(stack, label):
    t = time.monotonic()
    p = stack.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
    ok = check(f"backup: `up --wait` ({label}) returns with the stack healthy, the backup service too",
               p.returncode == 0, f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:])
    if not ok:
        stack.save_logs(f"backup-up-{label}")
    return ok


def post_many(port, n, tag):
    ids = []
    for i in range(n):
        r = post_task(port, "wordcount", {"text": f"{tag} {i} " + "word " * (i % 7)})
        tid = (r.json() or {}).get("id") if r.status == 202 else None
        if tid:
            ids.append(tid)
    return ids


def first_deploy(env):
    """The stack started the README's way, `scripts/deploy.sh VERSION`, which records it for the day-2 commands."""
    t = time.monotonic()
    p = run(["bash", os.path.join(REPO, "scripts", "deploy.sh"), TAG], timeout=400, env=env)
    return check("backup: `scripts/deploy.sh` (first deploy) returns with the stack healthy, the backup service too",
                 p.returncode == 0, f"{time.monotonic() - t:.1f}s" if p.returncode == 0 else p.stderr.strip()[-1500:])


def phase_backup():
    with recorded_deployment():
        backup_phase()


def backup_phase():
    # BACKUP_DIR: a host directory, so the backups outlive `down --volumes` (the named volume would not).
    backup_dir = os.path.join(os.path.dirname(LOG_DIR), "backups")
    os.makedirs(backup_dir, exist_ok=True)
    os.chmod(backup_dir, 0o777)  # written by the image's postgres user (uid 999)
    env = live_env({"BACKUP_DIR": backup_dir, "COMPOSE_PROJECT_NAME": LIVE_PROJECT, "COMPOSE_FILE": LIVE_FILE})
    stack = Stack(LIVE_PROJECT, LIVE_FILE, env)
    port = LIVE_PORT
    log(f"backup: live stack with BACKUP_DIR={backup_dir} (project {LIVE_PROJECT})")
    if not first_deploy(env):
        stack.save_logs("backup-up-first")
        return
    check_recorded(stack, TAG)
    # From here on, scripts/backup.sh runs as the README writes it: nothing exported, compose/.env says the rest.
    env = CLEAN_ENV

    done_ids = post_many(port, DONE_TASKS, "done")
    results = wait_tasks_done(port, done_ids, timeout=180)
    finished = {tid: t["result"] for tid, t in results.items() if t and t.get("state") == "done"}
    check(f"backup: {DONE_TASKS} tasks created and done before the backup", len(finished) == DONE_TASKS,
          f"{len(finished)} done of {len(done_ids)} accepted")
    stack.compose("stop", "tasks", timeout=120)
    queued_ids = post_many(port, QUEUED_TASKS, "queued")
    states = {(get_task(port, tid).json() or {}).get("state") for tid in queued_ids}
    check(f"backup: {QUEUED_TASKS} more tasks stay queued with the worker stopped",
          len(queued_ids) == QUEUED_TASKS and states == {"queued"}, f"states {states}")

    p, backup_s = backup_cmd(env, "now")
    check("backup: `scripts/backup.sh now` writes a checked backup", p.returncode == 0 and "wrote backup-" in p.stdout,
          (p.stdout + p.stderr).strip()[-500:])
    p, _ = backup_cmd(env, "list")
    names = [ln.split()[0] for ln in p.stdout.splitlines() if ln.startswith("backup-")]
    check("backup: `list` shows it with age and size", p.returncode == 0 and len(names) >= 1, p.stdout.strip()[-500:])
    r = request(port, "GET", "/readyz")
    last = ((r.json() or {}).get("backup") or {}).get("last_success_unix")
    check("backup: /readyz reports the last successful backup", isinstance(last, (int, float))
          and abs(time.time() - last) < 300, f"{r.status} backup={last}")
    p, verify_s = backup_cmd(env, "verify", "newest")
    rows = dict(ln.split() for ln in p.stdout.splitlines() if ln.startswith("  "))
    n_rows = int(rows.get("tasks", -1))
    check("backup: `verify newest` restores into a scratch database and counts every task",
          p.returncode == 0 and n_rows == DONE_TASKS + QUEUED_TASKS, (p.stdout + p.stderr).strip()[-500:])

    # A file in the backup directory that is no dump: refused in one line, nothing stops.
    junk = "backup-20000101T000000Z-junk.dump"
    with open(os.path.join(backup_dir, junk), "w") as f:
        f.write("not a dump\n")
    running = lambda: set(stack.compose("ps", "--services", "--status", "running").stdout.split())
    before = running()
    p, _ = backup_cmd(env, "restore", junk)
    err = p.stderr.strip().splitlines()
    after = running()
    check("backup: restoring a file that is no dump is refused in one line; nothing was stopped",
          p.returncode != 0 and len(err) == 1 and "not a PostgreSQL custom-format dump" in err[0]
          and "app" in after and after == before, f"rc={p.returncode} stderr={err} running={sorted(after)}")
    os.remove(os.path.join(backup_dir, junk))
    p, _ = backup_cmd(env, "restore", "backup-19990101T000000Z-none.dump")
    check("backup: restoring a missing file is refused in one line", p.returncode != 0
          and len(p.stderr.strip().splitlines()) == 1 and "no such backup" in p.stderr, p.stderr.strip())

    log("backup: down --volumes, up again on an empty database, restore the newest backup")
    p = stack.compose("down", "--volumes", "--remove-orphans", timeout=180)
    check("backup: `down --volumes` removes the stack; the backup stays in BACKUP_DIR",
          p.returncode == 0 and names[-1] in os.listdir(backup_dir), p.stderr.strip()[-300:])
    if not up(stack, "after down --volumes"):
        return
    r = get_task(port, done_ids[0])
    check("backup: the fresh stack has lost the tasks (the test is real)", r.status == 404, f"{r.status}")
    p, restore_s = backup_cmd(env, "restore", "newest")
    check("backup: `scripts/backup.sh restore newest` swaps the restored database in",
          p.returncode == 0 and "is live" in p.stdout, (p.stdout + p.stderr).strip()[-800:])
    wait_serving(port)

    back = {}
    for tid in done_ids:
        t = get_task(port, tid).json() or {}
        back[tid] = t.get("result") if t.get("state") == "done" else None
    same = sum(1 for tid, res in finished.items() if back.get(tid) == res)
    check(f"backup: all {DONE_TASKS} tasks done before the backup are back with their results",
          same == DONE_TASKS, f"{same} of {len(finished)} identical")
    t = time.monotonic()
    late = wait_tasks_done(port, queued_ids, timeout=180)
    n_done = sum(1 for v in late.values() if v and v.get("state") == "done")
    check(f"backup: the {QUEUED_TASKS} tasks queued at backup time are done by the worker (none lost)",
          n_done == QUEUED_TASKS, f"{n_done} done in {time.monotonic() - t:.1f}s")

    # A dump from a newer schema: a migration this code does not know, in a fresh backup.
    newer = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) " \
            "VALUES (99991231000000, 'from the future', true, '\\x00', 0)"
    q = stack.exec("db", "sh", "-c", f'psql -X -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "{newer}"')
    p, _ = backup_cmd(env, "now")
    # The live database goes back to what this code knows; only the newest backup has the unknown migration.
    unq = stack.exec("db", "sh", "-c", 'psql -X -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c '
                        '"DELETE FROM _sqlx_migrations WHERE version = 99991231000000"')
    ok_setup = q.returncode == 0 and p.returncode == 0 and unq.returncode == 0
    p, _ = backup_cmd(env, "restore", "newest")
    err = p.stderr.strip().splitlines()
    wait_serving(port)
    still = (get_task(port, done_ids[-1]).json() or {}).get("state")
    check("backup: a dump from a newer schema is refused in one line; the live data stays and the app is back",
          ok_setup and p.returncode != 0 and len(err) == 1 and "newer schema" in err[-1] and still == "done",
          f"setup ok={ok_setup} rc={p.returncode} stderr={err[-2:]} task state={still} {q.stderr.strip()[-200:]}")

    log(f"FIGURE backup of {DONE_TASKS + QUEUED_TASKS} tasks: `backup.sh now` {backup_s:.1f} s, "
        f"`verify` {verify_s:.1f} s, `restore` (stop, restore, migrate, swap, start) {restore_s:.1f} s")
    path = stack.save_logs("backup")
    log(f"backup: logs saved to {path}")
    p = stack.compose("down", "--volumes", "--remove-orphans", timeout=180)
    check("backup: `down --volumes` at the end", p.returncode == 0, p.stderr.strip()[-300:] if p.returncode else "")
