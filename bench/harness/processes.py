"""Starting and stopping the processes the harness runs, and waiting for them to answer."""

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import time

from .common import HarnessError, log, tail

_libc = ctypes.CDLL(None, use_errno=True)


def child_setup():
    # Own process group (stopped as a group), and killed if the harness dies without cleaning up.
    os.setsid()
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (cleared by setpriv's uid change; those are stopped by pid)


class Services:
    """Every long-running process the harness started, stopped in reverse order."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []  # (name, Popen, stop signal)

    def start(self, name, argv, env, log_name=None, stdout=None, stop_signal=signal.SIGTERM, cwd=None):
        logf = open(os.path.join(self.tmp, "logs", log_name or f"{name}.log"), "ab")
        out = logf if stdout is None else stdout
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=logf,
                                preexec_fn=child_setup, cwd=cwd or self.tmp)
        logf.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def stop(self, proc, timeout=15.0):
        for i, (name, p, sig) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                _stop(name, p, sig, timeout)
                return p.returncode
        return proc.returncode

    def stop_all(self):
        while self.procs:
            name, p, sig = self.procs.pop()
            _stop(name, p, sig, 15.0)


def _stop(name, proc, sig, timeout):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {timeout:.0f} s after {signal.Signals(sig).name}: killing it")
    # Whatever is left in its process group (nginx workers, postgres backends) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def run(argv, timeout, env=None, check=True, capture=True, cwd=None):
    try:
        res = subprocess.run(argv, env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if capture else None,
                             stderr=subprocess.PIPE if capture else None, text=True)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`{' '.join(argv[:4])}` did not finish within {timeout} s")
    if check and res.returncode != 0:
        detail = ((res.stderr or "") + (res.stdout or "")).strip()[-2000:]
        raise HarnessError(f"`{' '.join(argv[:4])}` exited {res.returncode}:\n{detail}")
    return res


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=2.0, host="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(what, probe, timeout, proc=None, logfile=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what}: the process exited with status {proc.returncode}{tail(logfile)}")
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(0.05)
    raise HarnessError(f"{what}: not ready within {timeout} s ({last}){tail(logfile)}")
