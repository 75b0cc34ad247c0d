"""--profile DIR: perf record of one process while a row is measured."""

import os
import re
import signal
import subprocess
import time

from .processes import child_setup

class Profiler:
    """--profile DIR: `perf record` (cpu-clock, call graphs) of one process while a row is measured, and a flat
    `perf report` next to it. Profiling costs throughput: figures of a profiled run are not for the README."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.proc = None

    def start(self, pid, name):
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.data = os.path.join(self.dir, f"{self.name}.data")
        self.proc = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-p", str(pid),
                                      "-o", self.data], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, f"{self.name}.perf.log"), "w"),
                                     preexec_fn=child_setup)
        time.sleep(0.3)

    def stop(self):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        for mode, args in (("flat", ["--no-children", "-g", "none"]), ("children", ["--children", "-g", "none"])):
            with open(os.path.join(self.dir, f"{self.name}.{mode}.txt"), "w") as out:
                subprocess.run(["perf", "report", "-i", self.data, "--stdio", "--percent-limit", "0.5",
                                "--sort", "symbol"] + args, stdout=out, stderr=subprocess.DEVNULL, timeout=300)
