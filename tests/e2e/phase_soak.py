"""Opt-in soak (E2E_PHASES=soak; bench/soak.sh runs it): the live stack flipped N -> N+1 -> N ... with
scripts/deploy.sh, E2E_SOAK_FLIPS times (default 20), each under E2E_SOAK_RATE requests/s (default 500) from
E2E_SOAK_CLIENTS keep-alive clients (default 24); every second POST without an Idempotency-Key
(E2E_SOAK_KEYED=1: all with one). One FIGURE line and the same checks as the suite's deploy per
flip. Not part of CI: 20 flips take about half an hour."""

import time

from day2 import recorded_deployment
from deploy import check_nothing_lost, deploy, wait_for_load
from harness import ENV, LIVE_FILE, LIVE_PORT, LIVE_PROJECT, TAG, TAG_NEXT, Stack, check, live_env, log
from load import KeepAliveLoad


def phase_soak():
    if not check("soak: a version N+1 to flip to (E2E_TAG_NEXT)", bool(TAG_NEXT)):
        return
    flips = int(ENV.get("E2E_SOAK_FLIPS", "20"))
    rate = int(ENV.get("E2E_SOAK_RATE", "500"))
    clients = int(ENV.get("E2E_SOAK_CLIENTS", "24"))
    unkeyed = ENV.get("E2E_SOAK_KEYED", "0") != "1"
    with recorded_deployment():
        live = Stack(LIVE_PROJECT, LIVE_FILE, live_env())
        p = live.compose("up", "--detach", "--wait", "--wait-timeout", "240", timeout=300)
        if not check("soak: the live stack is up", p.returncode == 0, p.stderr.strip()[-800:]):
            return
        started = time.monotonic()
        try:
            for flip in range(1, flips + 1):
                tag = TAG_NEXT if flip % 2 else TAG
                with KeepAliveLoad(LIVE_PORT, None, clients=clients, rate=rate, unkeyed=unkeyed) as load:
                    wait_for_load(load)
                    with load.switch(f"flip {flip}"):
                        p, took = deploy(live, tag)
                    check(f"soak: flip {flip} to {tag} with scripts/deploy.sh", p.returncode == 0,
                          p.stderr.strip()[-600:])
                check_nothing_lost(f"soak flip {flip}", f"soak flip {flip} of {flips} to {tag}", load, LIVE_PORT,
                                   [f"deploy {took:.1f} s"])
            log(f"FIGURE soak: {flips} flips in {time.monotonic() - started:.0f} s")
        finally:
            live.compose("down", "--volumes", "--remove-orphans", timeout=300)
