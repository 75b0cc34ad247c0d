#!/usr/bin/env python3
"""The benchmark; run it through bench/run.sh (`--help` for every option). The harness is the package beside this
file, bench/harness/, Python 3 standard library only."""

import sys

from harness.cli import main
from harness.common import HarnessError, Stop, log

if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
    except Stop as e:
        log(f"FAILED: {e}")
        sys.exit(1)
