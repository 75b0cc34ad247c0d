#!/usr/bin/env python3
"""End-to-end checks of compose/dev.yml and compose/live.yml on a real Docker engine (python3 stdlib only).

Run through tests/e2e/run.sh, which builds the app and the stand-in images, sets the variables harness.py reads,
and removes everything afterwards. Prints one PASS/FAIL line per check and ends with `N passed, M failed`.
Each phase is a module of its own: phase_dev.py, phase_live.py (with faults.py and deploy.py), phase_backup.py, phase_pitr.py,
phase_cluster.py (three engines: cluster.py), phase_watch.py,
phase_acme.py, phase_soak.py (opt-in: E2E_PHASES="soak", bench/soak.sh); image_contract.py and
stack_parity.py run first.
"""

import sys

import harness
from harness import ENV, PHASES, check
from image_contract import check_image_contract
from phase_acme import phase_acme
from phase_backup import phase_backup
from phase_cluster import phase_cluster
from phase_dev import phase_dev
from phase_live import phase_live
from phase_pitr import phase_pitr
from phase_soak import phase_soak
from phase_watch import phase_watch
from stack_parity import check_stack_parity

PHASE_RUNNERS = {"dev": phase_dev, "watch": phase_watch, "live": phase_live, "backup": phase_backup,
                 "pitr": phase_pitr, "cluster": phase_cluster, "acme": phase_acme, "soak": phase_soak}


def main():
    for name, fn in (("image contract", check_image_contract), ("stack parity", check_stack_parity)):
        try:
            fn()
        except Exception as e:
            check(f"{name}: ran to the end", False, f"{type(e).__name__}: {e}")
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
