#!/usr/bin/env python3
"""End-to-end checks of compose/dev.yml and compose/live.yml on a real Docker engine (python3 stdlib only).

Run through tests/e2e/run.sh, which builds the app and the stand-in images, sets the variables harness.py reads,
and removes everything afterwards. Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
Each phase is a module of its own: phase_dev.py, phase_live.py (with faults.py and deploy.py).
"""

import sys

import harness
from harness import ENV, PHASES, check
from phase_dev import phase_dev
from phase_live import phase_live

PHASE_RUNNERS = {"dev": phase_dev, "live": phase_live}


def main():
    for phase in PHASES:
        try:
            PHASE_RUNNERS[phase]()
        except Exception as e:
            check(f"{phase}: phase ran to the end", False, f"{type(e).__name__}: {e}")
    result = ENV.get("E2E_RESULT")
    if result:  # run.sh adds its own checks and prints the closing line after cleaning up
        with open(result, "w") as f:
            f.write(f"{harness.passed} {harness.failed}\n")
    else:
        print(f"{harness.passed} passed, {harness.failed} failed", flush=True)
    return 1 if harness.failed else 0


if __name__ == "__main__":
    sys.exit(main())
