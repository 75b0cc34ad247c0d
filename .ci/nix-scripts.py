#!/usr/bin/env python3
"""The project's shell texts in the flake, checked without building: `bash -n` and shellcheck.

Nix runs a build script only when it builds, and this CI cannot build (no binary cache); a user's
first `nix build .#applayer`, `nix run .#load` or `nix flake check` does. `writeShellApplication`
runs `bash -n` and shellcheck when it builds, so a shellcheck note there is a failed build. This
stage finds every shell text the project wrote in the derivations of every flake output of
x86_64-linux and aarch64-linux, and checks each the way the build would, without building.

1. Evaluate (../shared/nix-eval, `NIX_EVAL_RAW=1`): one `nix eval --json '.#.' --apply ...` gives the
   drvPath of every package, check, devShell and formatter, and the derivation of every app's
   program (its string context), for both systems; `nix derivation show -r` on those .drv files
   (written by that evaluation, so only read here) gives every derivation of their closures, each
   with its environment: `buildCommand`, phases and hooks, `text`.
2. Which texts are ours: provenance by content and place. Every string of the project's .nix files
   (tracked, or new and not ignored) is read with Nix's own parser (`nix-instantiate --parse`,
   which strips the indentation of ''…'' strings and prints each as a concatenation of literals
   and interpolations) and becomes a template: its literal parts verbatim, each interpolation a
   wildcard. A text in the closure is the project's when all three hold:
   * it is, whole, an instance of a template (a writeShellApplication's `text` after the lines
     nixpkgs puts before it; a crane phase's command between crane's `runHook` lines);
   * that string stands where Nix takes that text from: the value of the attribute of the same
     name (`text = …`, `buildCommand = …`, `postInstall = …`, crane's `buildPhaseCargoCommand =`,
     `installPhaseCommand = …`), or the script argument of a call (`runCommand NAME ENV TEXT`,
     `writeScript NAME TEXT`);
   * the derivation's name is an instance of the name given beside it: the call's NAME, or the
     `name`/`pname`/`pnameSuffix` of the same attribute set. A string with no name beside it
     (a phase set on a crane call that names nothing) must have MIN_LITERAL non-blank literal
     characters.
   nixpkgs', crane's and nix2container's own texts fail the first test, or the other two where
   one of ours happens to look like theirs (`mkdir -p $out…; ln -s …` is in both, under other
   names). Not found: a text assembled outside a string (`text = a + b;`), a derivation renamed
   after the call (overrideAttrs), a command fragment a builder splices into a line of its own
   (crane's `cargoBuildCommand`, `cargoExtraArgs`): those are not scripts.
3. Check each the way it runs:
   * writeShellApplication `text`: the file as nixpkgs writes it (shebang, `set -o errexit -o
     nounset -o pipefail`, PATH, the text), with `bash -n -O extglob` (stdenv.shellDryRun) and
     shellcheck with exactly the arguments of the derivation's own checkPhase (today none: the
     default severity, style, no exclusions; the dialect from the shebang: bash), plus `--norc`,
     as in the build sandbox, where no .shellcheckrc is found.
   * writeScript `text` with a shell shebang: `bash -n` or `sh -n`, shellcheck at the same severity
     (the dialect from the shebang).
   * runCommand `buildCommand`, phases and hooks: stdenv sources them in bash (`set -eu -o
     pipefail`), so `bash -n`, and shellcheck `-s bash` at the same severity; one line prepended,
     `declare -x NAME…` for each variable of the derivation's environment (`$out`, `$closure`…),
     so that those are not reported as unassigned (SC2154) while any other variable is.

Prints one line per checked text (result, system, kind, derivation name, output, file:line of
the text), each finding with shellcheck's message and the text's line, then the totals. Exit 1
on any finding, 2 if the evaluation fails.
"""

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SYSTEMS = ("x86_64-linux", "aarch64-linux")
OUTPUT_KINDS = ("packages", "apps", "checks", "devShells", "formatter")
MIN_LITERAL = 8

# One evaluation of the whole flake (`.#.`: the outputs attribute set itself) for both systems.
APPLY = """
o:
let
  inherit (builtins) attrNames getContext listToAttrs mapAttrs;
  systems = [ %s ];
  drvs = s: set: mapAttrs (_: v: [ v.drvPath ]) (set.${s} or { });
  perSystem = s: {
    packages = drvs s o.packages;
    checks = drvs s o.checks;
    devShells = drvs s o.devShells;
    formatter = if o.formatter ? ${s} then { "" = [ o.formatter.${s}.drvPath ]; } else { };
    # an app's program is "<store path>/bin/<name>"; its context names the derivation
    apps = mapAttrs (_: a: attrNames (getContext a.program)) (o.apps.${s} or { });
  };
in
listToAttrs (map (s: { name = s; value = perSystem s; }) systems)
""" % " ".join(f'"{s}"' for s in SYSTEMS)

# Environment variables that hold shell code run by stdenv (or, `text`, a script's file).
SHELL_KEY = re.compile(r"^(buildCommand|shellHook|text|[a-z][A-Za-z]*Phase|(pre|post)[A-Z][A-Za-z]*|[a-z][A-Za-z]*Command)$")
# What writeShellApplication puts before the text: shebang, `set -o` lines, runtimeEnv, PATH.
WSA_HEADER = re.compile(r'#![^\n]*\n(?:set -o \w+\n)*.*?\nexport PATH="[^"\n]*"\n\n', re.S)
# crane's mkCargoDerivation puts the commands it is given into its phases, between these lines.
CRANE_FRAMES = {
    "buildPhase": ("buildPhaseCargoCommand", re.compile(r"runHook preBuild\ncargo --version\n(.*)\nrunHook postBuild\n?", re.S)),
    "checkPhase": ("checkPhaseCargoCommand", re.compile(r"runHook preCheck\n(.*)\nrunHook postCheck\n?", re.S)),
    "installPhase": ("installPhaseCommand", re.compile(r"runHook preInstall\n(.*)\nrunHook postInstall\n?", re.S)),
}
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by stdenv's setup for every build, beside the derivation's own environment.
STDENV_VARS = ("out", "outputs", "prefix", "src", "srcs", "sourceRoot", "pname", "version", "name", "system")


def log(msg=""):
    print(f"nix-scripts: {msg}" if msg else "", flush=True)


# ------------------------------------------------------------------------------------ evaluation
def kit_nix(kit, top, args, what, logdir):
    """The kit's own nix in the project (NIX_EVAL_RAW=1); stdout is nix's, the rest goes to a log."""
    err = os.path.join(logdir, f"{what}.log")
    with open(err, "w") as e:
        p = subprocess.run([kit, top, *args], stdout=subprocess.PIPE, stderr=e,
                           env={**os.environ, "NIX_EVAL_RAW": "1"})
    if p.returncode != 0:
        with open(err) as e:
            tail = e.read().splitlines()[-25:]
        log(f"FAILED: {what} (exit {p.returncode}); the last lines of {err}:")
        print("\n".join("    " + line for line in tail), file=sys.stderr)
        sys.exit(2)
    return p.stdout


def evaluate(kit, top, logdir):
    t0 = time.time()
    roots = json.loads(kit_nix(kit, top, ["eval", "--json", ".#.", "--apply", APPLY], "eval-roots", logdir))
    t1 = time.time()
    paths = sorted({d for s in roots.values() for out in s.values() for ds in out.values() for d in ds})
    show = json.loads(kit_nix(kit, top, ["derivation", "show", "-r", *[p + "^*" for p in paths]],
                              "derivation-show", logdir))
    log(f"evaluated: {len(paths)} output derivations in {t1 - t0:.0f}s (nix eval), their closures read in "
        f"{time.time() - t1:.0f}s (nix derivation show -r)")
    return roots, show


# ------------------------------------------------------------------------------------ templates
def parser_command():
    """nix-instantiate of the kit (the evaluator's parser), else one on PATH."""
    cache = os.environ.get("NIX_EVAL_CACHE", "/var/tmp/nix-eval-kit")
    kit_ni = os.path.join(cache, "evaluator", "bin", "nix-instantiate")
    if os.access(kit_ni, os.X_OK):
        return kit_ni
    return shutil.which("nix-instantiate")


def tokens(s):
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            j, buf = i + 1, []
            while s[j] != '"':
                if s[j] == "\\":
                    buf.append({"n": "\n", "t": "\t", "r": "\r"}.get(s[j + 1], s[j + 1]))
                    j += 2
                else:
                    buf.append(s[j])
                    j += 1
            yield ("str", "".join(buf))
            i = j + 1
        elif s.startswith("${", i):
            yield ("open", "${")
            i += 2
        elif c in "([{":
            yield ("open", c)
            i += 1
        elif c in ")]}":
            yield ("close", c)
            i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and not s[j].isspace() and s[j] not in '"()[]{}' and not s.startswith("${", j):
                j += 1
            yield ("word", s[i:j])
            i = j


def tree(s):
    stack = [[]]
    for t in tokens(s):
        if t[0] == "open":
            node = ("group", t[1], [])
            stack[-1].append(node)
            stack.append(node[2])
        elif t[0] == "close":
            stack.pop()
        else:
            stack[-1].append(t)
    return stack[0]


class Template:
    """A string written in a .nix file: literal parts, None for each interpolation. `attr`: the
    attribute it is the value of (`text = …;`), if any; `names`: the name given beside it (the
    `name`/`pname` attribute of the same set, or the string arguments before it in the same call,
    such as runCommand's NAME), as templates; `call`: it is an argument of a function call."""

    def __init__(self, parts, file, attr=None, names=(), call=False, prefix=False):
        merged = []
        for p in parts:  # adjacent literals joined, adjacent wildcards collapsed
            if merged and p is not None and merged[-1] is not None:
                merged[-1] += p
            elif not (merged and p is None and merged[-1] is None):
                merged.append(p)
        self.parts = merged
        self.file = file
        self.attr = attr
        self.names = list(names)
        self.call = call
        self.lits = [p for p in merged if p]
        self.literal_chars = sum(len(re.sub(r"\s", "", p)) for p in self.lits)
        self.first = merged[0].strip() if merged and merged[0] is not None else None
        self.last = merged[-1].strip() if merged and merged[-1] is not None else None
        body = "".join(re.escape(p) if p is not None else ".*?" for p in merged)
        # a `pname` names the derivation `pname-version`
        self.regex = re.compile(r"\s*" + body + (r"(-.*)?" if prefix else "") + r"\s*", re.S)
        self.line = None

    def matches(self, v):
        vs = v.strip()
        if self.first is not None and not vs.startswith(self.first):
            return False
        if self.last is not None and not vs.endswith(self.last):
            return False
        pos = 0
        for lit in self.lits:
            k = v.find(lit, pos)
            if k < 0:
                return False
            pos = k + len(lit)
        return self.regex.fullmatch(v) is not None

    def claims(self, key, name):
        """May this string be the derivation's `key` (an env variable), for a derivation named `name`?"""
        if self.attr == key:
            pass  # `text = ''…''`, `buildCommand = …`, `postInstall = ''…''`
        elif not (self.call and self.names and key in ("buildCommand", "text")):
            return False  # the script argument of runCommand NAME ENV TEXT, writeScript NAME TEXT…
        if not self.names:  # a phase we set where no name is given (a crane call): longer texts only
            return self.literal_chars >= MIN_LITERAL
        return any(n.regex.fullmatch(name) for n in self.names)


def parts_of(node):
    """A string or an interpolated string (printed by --parse as ("lit" + expr + "lit")) -> parts."""
    if node[0] == "str":
        return [node[1]]
    if node[0] == "group" and node[1] == "(":
        segs, cur = [], []
        for k in node[2]:
            if k == ("word", "+"):
                segs.append(cur)
                cur = []
            else:
                cur.append(k)
        segs.append(cur)
        if len(segs) > 1 and any(len(g) == 1 and g[0][0] == "str" for g in segs):
            return [g[0][1] if len(g) == 1 and g[0][0] == "str" else None for g in segs]
    return None


def templates_of(ast, file):
    out = []

    def sibling_names(nodes):
        names = []
        for j in range(len(nodes) - 2):
            if nodes[j] in (("word", "name"), ("word", "pname")) and nodes[j + 1] == ("word", "="):
                names.append(Template(parts_of(nodes[j + 2]) or [None], file, prefix=nodes[j][1] == "pname"))
            elif nodes[j] == ("word", "pnameSuffix") and nodes[j + 1] == ("word", "="):  # crane: pname + suffix + version
                names.append(Template([None] + (parts_of(nodes[j + 2]) or [None]), file, prefix=True))
        return names

    def walk(nodes, opener, concat=False):
        for i, node in enumerate(nodes):
            parts = None if concat and node[0] == "str" else parts_of(node)
            if parts is not None:
                if i >= 2 and nodes[i - 1] == ("word", "=") and nodes[i - 2][0] == "word":
                    out.append(Template(parts, file, attr=nodes[i - 2][1], names=sibling_names(nodes)))
                elif opener == "(":
                    args = [Template(p, file) for p in map(parts_of, nodes[:i]) if p is not None]
                    out.append(Template(parts, file, names=args, call=True))
                else:
                    out.append(Template(parts, file))
            if node[0] == "group":  # the literal pieces of an interpolated string are not strings of their own
                walk(node[2], node[1], concat=parts is not None and node[0] == "group")

    walk(tree(ast), None)
    return out


def locate(t, lines):
    """The line of the file where the text starts: its first line that can be found on one line of
    the file only, less the lines before it; else the line of the name beside it."""

    def unique_line(segment):
        if len(segment) < 6:
            return None
        hits = [i for i, ln in enumerate(lines) if segment in ln or segment.replace("${", "''${") in ln]
        return hits[0] + 1 if len(hits) == 1 else None

    text = "".join(p if p is not None else "\0" for p in t.parts)
    for i, tl in enumerate(text.split("\n")):
        for seg in sorted((s.strip() for s in tl.split("\0")), key=len, reverse=True):
            n = unique_line(seg)
            if n:
                return max(1, n - i)
    for name in t.names:
        for seg in (s.strip() for s in name.lits):
            n = unique_line(seg)
            if n:
                return n
    first = next((s.strip() for s in text.split("\n")[0].split("\0") if s.strip()), None)
    return next((i + 1 for i, ln in enumerate(lines) if first and first in ln), None)


def load_templates(top, files):
    parser = parser_command()
    if not parser:
        log("FAILED: no nix-instantiate (the kit's or one on PATH) to read the .nix files with")
        sys.exit(2)
    result = []
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "HOME": state, "NIX_STATE_DIR": state, "NIX_CONF_DIR": state,
               "NIX_USER_CONF_FILES": "", "XDG_CACHE_HOME": state}
        for f in files:
            p = subprocess.run([parser, "--parse", os.path.join(top, f)], capture_output=True, text=True, env=env)
            if p.returncode != 0:
                log(f"FAILED: {f} does not parse: {p.stderr.strip()}")
                sys.exit(2)
            with open(os.path.join(top, f)) as src:
                lines = src.read().splitlines()
            for t in templates_of(p.stdout, f):
                if t.literal_chars == 0:
                    continue  # "${x}" is an instance of anything
                t.line = locate(t, lines)
                result.append(t)
    return result


# ------------------------------------------------------------------------------------ texts
Text = collections.namedtuple("Text", "system kind drv name key body output template dialect")


def shebang_dialect(text):
    m = re.match(r"#!\s*(\S+)(?:[ \t]+(\S+))?", text)
    if not m:
        return None
    prog = os.path.basename(m.group(1))
    if prog == "env" and m.group(2):
        prog = m.group(2)
    return {"bash": "bash", "sh": "sh", "dash": "sh", "ash": "sh"}.get(prog)


def closure_by_root(roots, show, system):
    """Each derivation reachable from the system's outputs, with the nearest output's name."""
    first = {}
    queue = collections.deque()
    for kind in OUTPUT_KINDS:
        for name, drvs in sorted(roots[system].get(kind, {}).items()):
            label = f"{kind}.{system}" + (f".{name}" if name else "")
            for d in drvs:
                if d not in first:
                    first[d] = label
                    queue.append(d)
    while queue:
        d = queue.popleft()
        for dep in show.get(d, {}).get("inputDrvs", {}):
            if dep not in first:
                first[dep] = first[d]
                queue.append(dep)
    return first


def find_texts(roots, show, templates):
    cache = {}

    def owner(v, key, name):
        if v not in cache:  # every template the text is an instance of, the most specific first
            cache[v] = sorted((t for t in templates if t.matches(v)), key=lambda t: -t.literal_chars)
        return next((t for t in cache[v] if t.claims(key, name)), None)

    texts = []
    for system in SYSTEMS:
        for drv, output in sorted(closure_by_root(roots, show, system).items()):
            d = show.get(drv)
            if not d:
                continue
            env = dict(d.get("env") or {})
            for k, v in (d.get("structuredAttrs") or {}).items():
                if isinstance(v, str):
                    env.setdefault(k, v)
            is_wsa = "shellcheck" in env.get("checkPhase", "") and "text" in env
            for key, value in sorted(env.items()):
                if not SHELL_KEY.match(key) or not isinstance(value, str) or not value.strip():
                    continue
                body, kind, dialect = value, None, "bash"
                if key == "text":
                    dialect = shebang_dialect(value)
                    if dialect is None:
                        continue  # not a shell script (a config, a Python file…)
                    if is_wsa:
                        m = WSA_HEADER.match(value)
                        body = value[m.end():] if m else value
                        kind = "writeShellApplication"
                    else:
                        kind = "writeScript"
                else:
                    kind = "runCommand" if key == "buildCommand" else key
                claim = key
                frame = CRANE_FRAMES.get(key)
                m = frame and frame[1].fullmatch(value)
                if m and m.group(1).strip():  # crane's phase around a command we may have set
                    t = owner(m.group(1), frame[0], d.get("name", ""))
                    if t is not None:
                        body, claim, kind = m.group(1), frame[0], frame[0]
                t = owner(body, claim, d.get("name", ""))
                if t is not None:
                    texts.append(Text(system, kind, drv, d.get("name", "?"), key, value, output, t, dialect))
    return texts


# ------------------------------------------------------------------------------------ checks
def shellcheck_args_of(check_phase):
    """The arguments writeShellApplication's checkPhase gives shellcheck (between it and "$target")."""
    for line in check_phase.splitlines():
        if "/bin/shellcheck" in line and "$target" in line:
            words = shlex.split(line)
            i = next(i for i, w in enumerate(words) if w.endswith("/bin/shellcheck"))
            return [w for w in words[i + 1:] if w != "$target"]
    return None


def check(text, show, shellcheck, workdir):
    """-> list of finding strings (empty: ok), and a note."""
    d = show[text.drv]
    env = d.get("env") or {}
    path = os.path.join(workdir, "script")
    findings, note = [], ""
    offset = 0
    if text.kind == "writeShellApplication":
        content = text.body  # the whole file, as writeTextFile writes it
        m = WSA_HEADER.match(content)
        offset = content[: m.end()].count("\n") if m else 0  # line numbers below are the text's
        dry = ["bash", "-n", "-O", "extglob", path]  # stdenv.shellDryRun
        sc_args = shellcheck_args_of(env.get("checkPhase", ""))
        if sc_args is None:
            sc_args, note = [], " (its checkPhase runs no shellcheck; checked at the default)"
    elif text.kind == "writeScript":
        content = text.body
        dry = ["bash" if text.dialect == "bash" else "sh", "-n", path]
        sc_args = []
    else:
        names = set(k for k in env if IDENT.match(k)) | set(STDENV_VARS) | set(d.get("outputs", {}))
        names |= set(k for k in (d.get("structuredAttrs") or {}) if IDENT.match(k))
        content = f"declare -x {' '.join(sorted(names))}\n" + text.body
        offset = 1
        dry = ["bash", "-n", path]
        sc_args = ["-s", "bash"]
    with open(path, "w") as f:
        f.write(content)
    body_lines = content.splitlines()

    p = subprocess.run(dry, capture_output=True, text=True)
    if p.returncode != 0:
        for line in p.stderr.strip().splitlines():
            m = re.match(re.escape(path) + r": line (\d+): (.*)", line)
            if m and m.group(2).startswith("`"):
                continue  # bash repeats the offending line
            if m:
                n = int(m.group(1))
                src = body_lines[n - 1] if 0 < n <= len(body_lines) else ""
                findings.append(f"{' '.join(dry[:-1])}: line {n - offset}: {m.group(2)}\n      | {src.strip()}")
            else:
                findings.append(f"{' '.join(dry[:-1])}: {line.replace(path, 'the text')}")
    p = subprocess.run([shellcheck, "--norc", "-f", "json1", *sc_args, path], capture_output=True, text=True)
    try:
        comments = json.loads(p.stdout)["comments"]
    except (ValueError, KeyError):
        comments = None
        findings.append(f"shellcheck failed (exit {p.returncode}): {p.stderr.strip()}")
    for c in comments or []:
        n = c["line"]
        if n <= offset:
            continue
        src = body_lines[n - 1] if n <= len(body_lines) else ""
        findings.append(f"SC{c['code']} ({c['level']}) line {n - offset}, column {c['column']}: {c['message']}\n"
                        f"      | {src.strip()}")
    return findings, note, sc_args


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shellcheck", default=os.environ.get("SHELLCHECK", "shellcheck"))
    ap.add_argument("--kit", default=None, help="../shared/nix-eval/eval by default")
    ap.add_argument("--keep", metavar="DIR", help="keep the evaluation's JSON and logs in DIR")
    ap.add_argument("--reuse", metavar="DIR", help="read roots.json and show.json from DIR instead of evaluating")
    args = ap.parse_args()

    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                         check=True).stdout.strip()
    kit = args.kit or os.path.join(top, "..", "shared", "nix-eval", "eval")
    t0 = time.time()
    workdir = args.keep or tempfile.mkdtemp(prefix="nix-scripts.")
    os.makedirs(workdir, exist_ok=True)
    try:
        if args.reuse:
            with open(os.path.join(args.reuse, "roots.json")) as f:
                roots = json.load(f)
            with open(os.path.join(args.reuse, "show.json")) as f:
                show = json.load(f)
        else:
            roots, show = evaluate(kit, top, workdir)
            if args.keep:
                for name, data in (("roots.json", roots), ("show.json", show)):
                    with open(os.path.join(workdir, name), "w") as f:
                        json.dump(data, f)
        nix_files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.nix"],
                                   cwd=top, capture_output=True, text=True, check=True).stdout.split()
        templates = load_templates(top, nix_files)
        texts = find_texts(roots, show, templates)
        version = subprocess.run([args.shellcheck, "--version"], capture_output=True, text=True).stdout
        version = re.search(r"version: (\S+)", version).group(1)
        bash = subprocess.run(["bash", "-c", "echo $BASH_VERSION"], capture_output=True, text=True).stdout.strip()
        log(f"{len(show)} derivations in the closures of {' and '.join(SYSTEMS)}'s outputs; {len(templates)} "
            f"strings from {len(nix_files)} .nix files; shellcheck {version} ({args.shellcheck}), bash {bash}")

        failed = 0
        per_system = collections.Counter()
        per_kind = {s: collections.Counter() for s in SYSTEMS}
        sc_args_seen = collections.Counter()
        for t in sorted(texts, key=lambda t: (SYSTEMS.index(t.system), t.template.file, t.template.line or 0, t.name, t.key)):
            findings, note, sc_args = check(t, show, args.shellcheck, workdir)
            per_system[t.system] += 1
            per_kind[t.system][t.kind] += 1
            sc_args_seen[" ".join(["--norc", *sc_args])] += 1
            where = f"{t.template.file}:{t.template.line or '?'}"
            result = "FAIL" if findings else "ok"
            print(f"nix-scripts: {result:<4} {t.system:<13} {t.kind:<22} {t.name:<36} {where:<26} {t.output}{note}",
                  flush=True)
            if findings:
                failed += 1
                print(f"    derivation {t.drv}, env.{t.key}")
                for f in findings:
                    print(f"    {f}")
        for s in SYSTEMS:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(per_kind[s].items()))
            log(f"{s}: {per_system[s]} texts ({kinds})")
        log("shellcheck " + "; ".join(f"{a}: {n} texts" for a, n in sorted(sc_args_seen.items()))
            + f"; the stage took {time.time() - t0:.0f}s")
        passed = sum(per_system.values()) - failed
        for s in SYSTEMS:
            if per_system[s] == 0:
                log(f"FAILED: no text of the project found for {s}: the evaluation or the template match is broken")
                failed += 1
        log(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
