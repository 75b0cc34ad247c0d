"""What every part of the harness shares: paths, the two ways it fails, and its log line."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
NGINX = os.environ.get("NGINX", "")  # bench/run.sh sets it (built by .ci/nginx.sh unless given)
MIB = 1024 * 1024


class HarnessError(Exception):
    """The harness could not do its job (as opposed to a target being missed)."""


class Stop(BaseException):
    """A signal or the time limit: unwind, clean up, exit 1."""


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def tail(path, lines=15):
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        data = f.read()[-8000:].decode(errors="replace").splitlines()[-lines:]
    return "\n--- " + path + " (end) ---\n" + "\n".join(data)
