#!/usr/bin/env python3
"""The GitHub workflow against the flake, without GitHub and without building.

Usage: workflow-refs.py [--workflow FILE] [--kit PATH] [--list]

  1. FILE (default .github/workflows/ci.yml) is valid YAML and well-formed: `on` and `jobs`, every job with
     `runs-on` and a list of `steps`, every step with exactly one of `run` / `uses`, every `needs` an existing job.
  2. Every flake reference in a `run:` script (`.#NAME` after `nix build`, `nix run`, `nix eval`, …; for `nix run`
     only before its `--`) is literal: `${{ matrix.KEY }}` is expanded for each entry of the job's matrix, any
     other expression or shell variable is an error (a name that is only known at run time cannot be checked).
  3. Each reference exists for the system of the runner that uses it (ubuntu-*-arm: aarch64-linux, other
     ubuntu-*: x86_64-linux), as Nix resolves it: `nix build .#X` -> packages.SYSTEM.X, `nix run .#X` ->
     apps.SYSTEM.X or else packages.SYSTEM.X, `nix eval .#X.a` -> packages.SYSTEM.X.a, and a name starting with
     an output type (checks.SYSTEM.X, …) as it is. "Exists" is decided by the flake itself: the attributes are
     evaluated with the offline evaluation kit (../shared/nix-eval/eval; one `nix eval` per attribute, nothing
     built). Without the kit, step 3 is skipped with a note, or fails when CI=true.

--list prints the resolved references and stops after step 2. Exit 0 when all checks pass, 1 otherwise.
"""
import argparse
import collections
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("workflow-refs: PyYAML is missing: apt-get install python3-yaml (or pip install pyyaml)")

OUTPUT_TYPES = {"packages", "legacyPackages", "checks", "apps", "devShells", "formatter"}
EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
# In one logical line of a script: a nix subcommand, a standalone `--`, or a flake reference to this flake.
TOKEN = re.compile(
    r"(?P<nix>(?<![\w/.-])nix\s+(?P<sub>[a-z][a-z-]*))"
    r"|(?P<dd>(?<=\s)--(?=\s|$))"
    r"|(?P<ref>(?<![\w/.#-])\.#(?P<name>[^\s\"'`;|&()<>]*))"
)
Ref = collections.namedtuple("Ref", "job system step kind name line")


def runner_system(label):
    label = str(label)
    if label.startswith("ubuntu-"):
        return "aarch64-linux" if "arm" in label else "x86_64-linux"
    return None


def matrix_entries(job):
    """The job's matrix as a list of {key: value} (one empty entry without a matrix)."""
    matrix = (job.get("strategy") or {}).get("matrix")
    if not matrix:
        return [{}]
    if not isinstance(matrix, dict):
        return None
    keys = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    entries = [{}]
    for key, values in keys.items():
        if not isinstance(values, list):
            return None
        entries = [dict(e, **{key: v}) for e in entries for v in values]
    if not keys:
        entries = []
    entries += [dict(e) for e in matrix.get("include") or []]
    return entries or [{}]


def expand(text, entry):
    """Expand ${{ matrix.KEY }} with the entry; other expressions are kept (and reported where they matter)."""

    def sub(m):
        expr = m.group(1)
        if expr.startswith("matrix.") and expr[len("matrix."):] in entry:
            return str(entry[expr[len("matrix."):]])
        return m.group(0)

    return EXPR.sub(sub, str(text))


def structure(wf):
    problems = []
    if not isinstance(wf, dict):
        return ["the workflow is not a mapping"]
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean true.
    if "on" not in wf and True not in wf:
        problems.append("no `on` (the events that run the workflow)")
    jobs = wf.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        return problems + ["no `jobs` mapping"]
    for name, job in jobs.items():
        if not isinstance(job, dict):
            problems.append(f"job {name}: not a mapping")
            continue
        if "uses" in job:  # a reusable workflow: no runner, no steps of its own
            continue
        if "runs-on" not in job:
            problems.append(f"job {name}: no runs-on")
        steps = job.get("steps")
        if not isinstance(steps, list) or not steps:
            problems.append(f"job {name}: no list of steps")
            steps = []
        for i, step in enumerate(steps, 1):
            if not isinstance(step, dict) or ("run" in step) == ("uses" in step):
                problems.append(f"job {name}, step {i}: needs exactly one of `run` and `uses`")
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                problems.append(f"job {name}: needs unknown job {need!r}")
        if matrix_entries(job) is None:
            problems.append(f"job {name}: a matrix this check cannot expand")
    return problems


def references(wf):
    """Every flake reference of every run: script, per matrix entry; plus the problems found on the way."""
    refs, problems = [], []
    for jname, job in (wf.get("jobs") or {}).items():
        if not isinstance(job, dict) or "uses" in job:
            continue
        for entry in matrix_entries(job) or [{}]:
            runs_on = expand(job.get("runs-on", ""), entry)
            system = runner_system(runs_on)
            where = f"job {jname}" + (f" ({', '.join(f'{k}={v}' for k, v in entry.items())})" if entry else "")
            for i, step in enumerate(job.get("steps") or [], 1):
                if not isinstance(step, dict) or "run" not in step:
                    continue
                label = f"{where}, step {step.get('name') or i}"
                script = re.sub(r"\\\n", " ", expand(step["run"], entry))
                for line in script.splitlines():
                    sub, after_dd = None, False
                    for m in TOKEN.finditer(line):
                        if m.group("nix"):
                            sub, after_dd = m.group("sub"), False
                        elif m.group("dd"):
                            after_dd = True
                        elif sub == "run" and after_dd:
                            continue  # the program's own arguments
                        else:
                            name = m.group("name")
                            if not re.fullmatch(r"[A-Za-z0-9_'+-]+(\.[A-Za-z0-9_'+-]+)*", name):
                                problems.append(f"{label}: `.#{name}` is not a literal output name "
                                                f"(only ${{{{ matrix.KEY }}}} is expanded): {line.strip()}")
                                continue
                            if system is None:
                                problems.append(f"{label}: runs-on {runs_on!r}: unknown system for `.#{name}`")
                                continue
                            kind = {"run": "run", "eval": "eval"}.get(sub, "build")
                            refs.append(Ref(jname, system, label, kind, name, line.strip()))
    return refs, problems


def candidates(ref):
    """The attribute paths Nix tries for the reference, each as the kit evaluates it (a string)."""
    parts = ref.name.split(".")
    if parts[0] in OUTPUT_TYPES and len(parts) >= 2:
        suffix = "" if ref.kind == "eval" else (".program" if parts[0] == "apps" else ".drvPath")
        return [ref.name + suffix]
    if ref.kind == "run":
        return [f"apps.{ref.system}.{ref.name}.program", f"packages.{ref.system}.{ref.name}.drvPath"]
    if ref.kind == "eval":
        return [f"packages.{ref.system}.{ref.name}"]
    return [f"packages.{ref.system}.{ref.name}.drvPath"]


def system_mismatch(ref):
    parts = ref.name.split(".")
    if parts[0] in OUTPUT_TYPES and len(parts) >= 2 and parts[1] != ref.system and parts[0] != "formatter":
        return f"{ref.step}: `.#{ref.name}` names {parts[1]} on a {ref.system} runner: {ref.line}"
    return None


def parse_kit_output(text):
    """attr -> [ok, message] from the evaluation kit's PASS/FAIL lines."""
    results, current = {}, None
    for line in text.splitlines():
        m = re.match(r"(PASS|FAIL) (\S+)", line)
        if m:
            current = m.group(2)
            results[current] = [m.group(1) == "PASS", ""]
        elif current and not results[current][0] and line.startswith("     "):
            results[current][1] += line.strip() + " "
    return results


def kit_eval(kit, top, attrs):
    """attr -> (ok, message) from one run of the evaluation kit."""
    out = subprocess.run([kit, top] + attrs, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"workflow-refs: the evaluation kit failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    results = parse_kit_output(out.stdout)
    missing = [a for a in attrs if a not in results]
    if missing:
        sys.exit(f"workflow-refs: the evaluation kit reported nothing for {missing}:\n{out.stdout}{out.stderr}")
    return {a: (ok, msg.strip()) for a, (ok, msg) in results.items()}


def is_missing(msg):
    return bool(re.search(r"does not provide attribute|attribute '[^']*' missing", msg))


def main():
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
    ap = argparse.ArgumentParser(description="Check the GitHub workflow against the flake's outputs.")
    ap.add_argument("--workflow", default=os.path.join(top, ".github/workflows/ci.yml"))
    ap.add_argument("--kit", default=os.path.join(top, "..", "shared", "nix-eval", "eval"))
    ap.add_argument("--list", action="store_true", help="print the resolved references, evaluate nothing")
    ap.add_argument("--eval-log", default=os.environ.get("NIX_EVAL_LOG"),
                    help="the kit's output of a whole-flake evaluation of this tree (.ci/nix-eval.sh writes it; "
                         "default $NIX_EVAL_LOG): the references it passed are not evaluated again")
    args = ap.parse_args()
    name = os.path.relpath(args.workflow, top)

    try:
        with open(args.workflow) as f:
            wf = yaml.safe_load(f)
    except yaml.YAMLError as e:
        print(f"workflow-refs: {name} is not valid YAML: {e}")
        return 1
    problems = structure(wf)
    refs, ref_problems = references(wf) if isinstance(wf, dict) else ([], [])
    problems += ref_problems + [p for p in map(system_mismatch, refs) if p]
    distinct = sorted({(r.kind, r.system, r.name) for r in refs})
    print(f"workflow-refs: {name}: valid YAML, {len(wf.get('jobs') or {})} jobs, {len(refs)} flake references "
          f"({len(distinct)} distinct)")
    if args.list:
        for kind, system, ref_name in distinct:
            print(f"  {kind:5} {system:13} .#{ref_name:40} -> {' or '.join(candidates(Ref('', system, '', kind, ref_name, '')))}")
    for p in problems:
        print(f"workflow-refs: FAIL {p}")
    if problems or args.list:
        return 1 if problems else 0

    if not os.access(args.kit, os.X_OK):
        if os.environ.get("CI") == "true":
            print(f"workflow-refs: FAIL the evaluation kit {args.kit} is missing (CI=true requires it)")
            return 1
        print(f"workflow-refs: SKIPPED the outputs' existence: no evaluation kit at {args.kit}")
        return 0

    by_key = {(k, s, n): candidates(Ref("", s, "", k, n, "")) for k, s, n in distinct}
    # One evaluation shared with the nix eval stage: what it passed (every x86_64-linux output) is taken from its
    # log; only the rest (other systems, names it does not have) is evaluated here.
    results = {}
    if args.eval_log and os.path.isfile(args.eval_log):
        with open(args.eval_log) as f:
            results = {a: (True, "") for a, (ok, _) in parse_kit_output(f.read()).items() if ok}
    wanted = sorted({c[0] for c in by_key.values() if not any(x in results for x in c)})
    print(f"workflow-refs: {len(by_key) - len(wanted)} reference(s) passed in the shared evaluation"
          f"{' (' + os.path.relpath(args.eval_log, top) + ')' if results else ''}, {len(wanted)} to evaluate")
    if wanted:
        results.update(kit_eval(args.kit, top, wanted))
    fallbacks = sorted({c[1] for c in by_key.values()
                        if len(c) > 1 and c[0] in results and not results[c[0]][0] and is_missing(results[c[0]][1])})
    if fallbacks:
        results.update(kit_eval(args.kit, top, fallbacks))

    failed = 0
    for key, cands in by_key.items():
        outcome = [(c, results[c]) for c in cands if c in results]
        if any(ok for _, (ok, _) in outcome):
            continue
        failed += 1
        users = [r for r in refs if (r.kind, r.system, r.name) == key]
        _, (_, msg) = outcome[-1]
        why = "the flake has no such output" if all(is_missing(m) for _, (_, m) in outcome) else f"does not evaluate: {msg}"
        print(f"workflow-refs: FAIL `.#{key[2]}` ({key[0]} on {key[1]}; tried {', '.join(c for c, _ in outcome)}): {why}")
        for r in users:
            print(f"    used in {r.step}: {r.line}")
    print(f"workflow-refs: {len(by_key) - failed} of {len(by_key)} distinct references evaluate, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
