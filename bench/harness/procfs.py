"""What /proc says: memory (VmRSS, VmHWM), CPU time, process trees, the machine's load."""

import os
import threading

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / CLK_TCK


def process_tree(root):
    """root and all its descendants (for postgres backends and nginx workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def busy_compilers():
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() in ("rustc", "cc", "cc1", "ld", "ld.lld", "mold", "nix-daemon"):
                        n += 1
            except OSError:
                pass
    return n


class RssSampler(threading.Thread):
    """Samples VmRSS of some pids every 100 ms (VmHWM is the kernel's own peak; this shows the shape)."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = dict(pids)
        self.max = {k: 0 for k in self.pids}
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for name, pid in self.pids.items():
                try:
                    self.max[name] = max(self.max[name], proc_status(pid).get("VmRSS", 0))
                except OSError:
                    pass
            self.halt.wait(0.1)
