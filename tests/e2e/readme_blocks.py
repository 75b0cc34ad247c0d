#!/usr/bin/env python3
"""The README's own commands, for the e2e suite to run as written (never a copy that could drift).

    python3 tests/e2e/readme_blocks.py secrets   # prints the "Live deployment" secrets block
    python3 tests/e2e/readme_blocks.py day2      # prints the day-2 block (`docker compose -f compose/live.yml ps` …)
    python3 tests/e2e/readme_blocks.py swarm     # prints the "Past one machine" block (scripts/swarm.sh …)

From Python: `commands("day2")` gives the block's commands one by one (comments stripped, continuations joined).
"""

import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def sh_blocks(section):
    """The ```sh blocks of the README section whose heading starts with `section`."""
    text = open(README).read()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start:end if end > 0 else None], re.S)


def block(name):
    live = sh_blocks("Live deployment")
    if name == "secrets":
        return next(b for b in live if "mkdir -m 700 secrets" in b)
    if name == "day2":
        return next(b for b in live if "docker compose -f compose/live.yml ps" in b)
    if name == "first-deploy":
        return next(b for b in live if "scripts/deploy.sh 0.1.0" in b)
    if name == "swarm":
        return next(b for b in sh_blocks("Past one machine") if "scripts/swarm.sh rollback" in b)
    raise KeyError(name)


def commands(name):
    """One string per command: comments after `#` removed, lines ending in `\\` joined."""
    out, cur = [], ""
    for line in block(name).splitlines():
        line = re.sub(r"\s+#.*$", "", line).rstrip()
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    return out


if __name__ == "__main__":
    print(block(sys.argv[1]), end="")
