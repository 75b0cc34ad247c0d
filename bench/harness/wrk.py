"""Driving wrk: its Lua scripts, a timed or counted run, the parsed result, and one measured HTTP row (with the
CPU time each process spent on it)."""

import json
import os
import re
import signal
import subprocess
import time

from .common import HarnessError
from .processes import child_setup, run
from .procfs import cpu_seconds, process_tree

POST_BODY = '{"kind":"wordcount","payload":{"text":"a b a"}}'

WRK_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,' ..
    '"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
'''

WRK_POST = '''
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
''' % POST_BODY

# A fixed number of requests: each thread stops after `limit` answers and leaves a marker file. wrk itself only
# ends after -d, so the harness sends it SIGINT (wrk then reports as usual) once every thread has its marker.
WRK_POST_COUNT = WRK_POST + '''
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end
local answered = 0
local limit = %d
local marker = "%s"
response = function(status, headers, body)
  answered = answered + 1
  if answered == limit then
    local f = io.open(marker .. thread_no, "w")
    if f then f:close() end
    wrk.thread:stop()
  end
end
'''


class Wrk:
    def __init__(self, tmp, threads, connections):
        self.tmp, self.threads, self.connections = tmp, threads, connections
        self.scripts = {}

    def script(self, name, body):
        path = os.path.join(self.tmp, f"wrk-{name}.lua")
        with open(path, "w") as f:
            f.write(body + WRK_DONE)
        return path

    def argv(self, url, seconds, script):
        return ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s", "--timeout", "5s",
                "-s", script, url]

    def run(self, url, seconds, script):
        res = run(self.argv(url, seconds, script), timeout=seconds + 60, check=False)
        return self.parse(url, res.returncode, res.stdout, res.stderr)

    def run_count(self, url, n, limit_s):
        """n POSTs (about: up to one in-flight request per connection more); returns (seconds, result)."""
        per_thread = max(1, n // self.threads)
        marker = os.path.join(self.tmp, f"wrk-done-{time.monotonic_ns()}-")
        script = self.script("post-count", WRK_POST_COUNT % (per_thread, marker))
        t0 = time.monotonic()
        proc = subprocess.Popen(self.argv(url, limit_s, script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=child_setup)
        try:
            while proc.poll() is None and time.monotonic() - t0 < limit_s + 30:
                if all(os.path.exists(f"{marker}{i}") for i in range(1, self.threads + 1)):
                    break
                time.sleep(0.002)
            elapsed = time.monotonic() - t0
            # The stopped threads leave up to one request per connection in flight. Closing the connections now
            # would cancel those requests in the app, possibly between the INSERT and the XADD of an enqueue
            # (such a task then waits for the worker's reconciler, 30 s). The kernel buffers their answers, so
            # waiting a moment lets them all finish before wrk is stopped.
            time.sleep(1.0)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return elapsed, self.parse(url, proc.returncode, out, err)

    def parse(self, url, returncode, stdout, stderr):
        m = re.search(r"^BENCHJSON (\{.*\})$", stdout, re.M)
        if returncode != 0 or not m:
            raise HarnessError(f"wrk {url} failed (status {returncode}):\n{stdout}\n{stderr}")
        r = json.loads(m.group(1))
        secs = r["duration_us"] / 1e6
        errors = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
        return {
            "requests": int(r["requests"]),
            "seconds": round(secs, 3),
            "rps": r["requests"] / secs if secs else 0.0,
            "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "mean_ms": r["mean_us"] / 1000,
            "errors": int(errors),
            "error_detail": {k: int(r[k]) for k in ("status", "connect", "read", "write", "timeout")},
        }


def http_row(stack, wrk, name, url, script, log_level, warmup, seconds):
    wrk.run(url, warmup, script)
    profiling = stack.profiler and stack.serve and log_level != "-"
    if profiling:
        stack.profiler.start(stack.serve.pid, f"serve-{name}-{log_level}")
    pg = process_tree(stack.postgres.pid)
    ng = process_tree(stack.nginx.pid)
    groups = {"serve": [stack.serve.pid], "tasks": [stack.tasks.pid] if stack.tasks else [],
              "postgres": pg, "nginx": ng, "redis": [stack.redis.pid]}
    if stack.hello:
        groups["hello"] = [stack.hello.pid]
    if stack.db_reference:
        groups["db_reference"] = [stack.db_reference.pid]
    before = {k: cpu_seconds(v) for k, v in groups.items()}
    w0 = time.monotonic()
    r = wrk.run(url, seconds, script)
    wall = time.monotonic() - w0
    after = {k: cpu_seconds(process_tree(stack.postgres.pid) if k == "postgres" else
                            process_tree(stack.nginx.pid) if k == "nginx" else v) for k, v in groups.items()}
    if profiling:
        stack.profiler.stop()
    r["name"] = name
    r["log"] = log_level
    r["url"] = url
    r["cpu_us_per_req"] = {k: round((after[k] - before[k]) * 1e6 / r["requests"], 1) if r["requests"] else None
                           for k in groups}
    r["cpu_cores_busy"] = {k: round((after[k] - before[k]) / wall, 2) for k in groups}
    return r
