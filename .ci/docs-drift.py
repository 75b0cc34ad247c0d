#!/usr/bin/env python3
"""Docs and defaults that cannot drift from the code. Python 3 standard library only; builds and evaluates nothing.

Usage: docs-drift.py [--verbose]      (from anywhere inside the repository; well under a second; Python >= 3.11)

--verbose also prints what it found in the sources: the subcommands, the flake's apps and systems.

1. version: Cargo.toml's `version` is the one default image tag. Compose cannot read Cargo.toml, so wherever a
   compose file or a script hard-codes a default tag, it must be Cargo's: a `${NAME:-X.Y.Z}` default of a variable
   whose name ends in VERSION (compose/dev.yml's DEV_VERSION, twice), and a literal tag of the project's images
   (`docker-sample/app:X.Y.Z`, `docker-sample/httpd:X.Y.Z`), in every file but the docs (*.md) and lock files.
   Not checked: examples in messages (compose/stack.yml's `e.g. APP_VERSION=0.1.0`: the variable is required,
   the value only shows the form) and the READMEs' walk-throughs (deploy 0.1.0, then 0.2.0, roll back).

2. commands: every command in the READMEs' shell code blocks (```sh, ```bash, ```shell, ```console; every
   README.md in the repository) exists, and so do the command-shaped inline code spans of their prose (those that
   start with `app`, `httpd-start`, `nix`, `cargo`, `docker compose`, `bash`/`sh`/`python3`, or a path ending in
   .sh or .py). For each simple command (continuations joined, comments dropped, split at ; && || | ( ), leading
   VAR=value assignments and wrappers such as sudo, env and `nix develop -c` removed):
     - a path (`scripts/deploy.sh`, `bench/run.sh`): a file of the repository, executable when run directly;
       `bash FILE`, `sh FILE`, `python3 FILE`: FILE is a file of the repository;
     - `app SUB`, `cargo run [--bin app] -- SUB`, `docker compose ... exec SERVICE app SUB`, `docker compose ...
       run SERVICE SUB` (a service on the app image, whose entry point is app): SUB is a variant of the clap
       Subcommand enum under src/ (kebab-cased; `#[command(name|alias = ...)]` honoured), found wherever it moves;
     - `httpd-start SUB`: SUB is one of the `Some("SUB") =>` arms of the httpd-start binary (Cargo.toml's path);
     - `cargo run|build|test` with `--bin B` / `--example E` / `--test T` / `--features F`: they exist (Cargo.toml,
       tests/T.rs, tests/T/main.rs; an example's required-features are given); `cargo run` without --bin needs one
       binary or `default-run`;
     - `docker compose -f FILE ...`, `docker stack deploy -c FILE`: FILE exists; the services named after
       exec, run, logs, up, start, stop, restart, ps, pull are services of those files;
     - anything else: a tool from outside the repository, on the ALLOWED list below (an unknown name fails).
   Flake references `.#NAME` anywhere in the READMEs (code, comments, prose): after `nix run`, NAME is a flake app
   (an attribute made by a Nix function whose result has `type = "app"`, such as nix/apps.nix's mkApp and
   nix/script-apps.nix's scriptApp); otherwise (`nix build`, `nix eval`) NAME is an attribute defined or inherited
   in flake.nix or nix/**.nix; `TYPE.SYSTEM[.NAME]` needs a known output type and one of flake.nix's systems.
   Placeholders (`<id>`, `.#X`, `.#NAME`) and the deliberately wrong names in PLACEHOLDERS are not checked.
   The Nix files are read as text, not evaluated (the evaluated outputs are .ci/nix-eval.sh's job), so this stays
   right while they are reorganised, as long as apps are built by such a function.

Prints each failure as `file:line: command: reason`; exit status 1 on any, else 0.
"""
import os
import re
import shlex
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("docs-drift: needs Python >= 3.11 (tomllib, to read Cargo.toml)")

# Tools from outside the repository the READMEs may run. A new one is added here, deliberately.
ALLOWED = {
    "apt-get", "awk", "brew", "cat", "cd", "chmod", "chown", "cosign", "cp", "curl", "diffoscope", "docker",
    "echo", "export", "gh", "git", "grep", "jq", "kill", "ls", "mkdir", "mv", "nix", "open", "openssl",
    "pg_dump", "pg_restore", "printf", "psql", "redis-cli", "regctl", "rm", "rustup", "sed", "skopeo", "sleep",
    "ssh", "sudo", "tar", "tee", "umask", "watchexec", "wrk", "xdg-open",
}
SHELL_FENCES = {"sh", "bash", "shell", "console", "shell-session"}
SHELL_KEYWORDS_SKIP = {"for", "case", "select", "done", "fi", "esac", "in", "function"}
SHELL_KEYWORDS_PREFIX = {"!", "time", "exec", "then", "do", "else", "elif", "if", "while", "until", "{", "}"}
WRAPPERS = {"sudo", "env", "nice", "nohup", "command", "xargs"}
CONTROL = {";", ";;", "&&", "||", "|", "|&", "&", "(", ")", "\n"}
REDIRECT = re.compile(r"^(\d*)(<|>|>>|<<|<<<|>&|<&|&>|&>>|>\|)$")
ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"<[A-Za-z][\w .-]*>")
# Names the READMEs show on purpose as wrong (nix/README.md: what .ci/workflow-refs.py rejects); NAME, X: placeholders.
PLACEHOLDERS = {"applayer-archiv", "push-indexx"}
OUTPUT_TYPES = {"packages", "apps", "checks", "devShells", "formatter", "legacyPackages", "nixosModules", "overlays"}

failures = []
checked = {"commands": 0, "flake refs": 0}


def fail(where, command, reason):
    failures.append(f"{where}: `{command}`: {reason}")


def repo_files(top):
    """Tracked files plus new ones not git-ignored (another engineer's file not yet committed counts)."""
    try:
        out = subprocess.run(["git", "-C", top, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout
        return sorted({f for f in out.split("\0") if f and os.path.exists(os.path.join(top, f))})
    except (OSError, subprocess.CalledProcessError):
        found = []
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in (".git", "target")]
            found += [os.path.relpath(os.path.join(root, f), top) for f in files]
        return sorted(found)


def read(top, rel):
    with open(os.path.join(top, rel), encoding="utf-8", errors="replace") as f:
        return f.read()


# ---- facts of the repository --------------------------------------------------------------------------------------

class Repo:
    def __init__(self, top):
        self.top = top
        self.files = repo_files(top)
        self.fileset = set(self.files)
        self.cargo = tomllib.loads(read(top, "Cargo.toml"))
        self.version = self.cargo["package"]["version"]
        self.bins = {b["name"]: b.get("path", f"src/bin/{b['name']}.rs") for b in self.cargo.get("bin", [])}
        if not self.bins:
            self.bins = {self.cargo["package"]["name"]: "src/main.rs"}
        self.examples = {e["name"]: e for e in self.cargo.get("example", [])}
        for f in self.files:
            m = re.fullmatch(r"examples/([\w-]+)\.rs", f)
            if m:
                self.examples.setdefault(m.group(1), {})
        self.tests = {t["name"] for t in self.cargo.get("test", [])}
        for f in self.files:
            m = re.fullmatch(r"tests/([\w-]+)(?:\.rs|/main\.rs)", f)
            if m:
                self.tests.add(m.group(1))
        self.features = set(self.cargo.get("features", {}))
        self.default_run = self.cargo["package"].get("default-run")
        self.subcommands = {"app": self.app_subcommands()}
        self.subcommands["httpd-start"] = self.match_arm_subcommands("httpd-start")
        self.nix_files = [f for f in self.files if f.endswith(".nix") and (f == "flake.nix" or f.startswith("nix/"))]
        self.nix_text = {f: read(top, f) for f in self.nix_files}
        self.systems = set(re.findall(r'"((?:x86_64|aarch64|i686|armv[67]l|riscv64|powerpc64le)-(?:linux|darwin))"',
                                      self.nix_text.get("flake.nix", "")))
        self.nix_attrs = self.defined_nix_attrs()
        self.apps = self.flake_apps()
        self.compose_cache = {}

    # -- the app's clap subcommands: every enum deriving Subcommand under src/, except other binaries' own dirs --
    def app_subcommands(self):
        other_bin_dirs = [os.path.dirname(p) + "/" for p in self.bins.values()
                          if os.path.dirname(p) not in ("src", "src/bin")]
        derive = re.compile(r"#\[derive\([^)]*\bSubcommand\b[^)]*\)\]")
        enum = re.compile(r"\s*(?:(?:#\[[^\]]*\]|//[^\n]*)\s*)*(?:pub(?:\([^)]*\))?\s+)?enum\s+\w+[^{]*\{")
        names = set()
        for f in self.files:
            if not (f.startswith("src/") and f.endswith(".rs")) or any(f.startswith(d) for d in other_bin_dirs):
                continue
            text = read(self.top, f)
            for m in derive.finditer(text):
                em = enum.match(text, m.end())
                if em:
                    names |= enum_variants(text, em.end())
        return names

    def match_arm_subcommands(self, binary):
        path = self.bins.get(binary)
        if not path:
            return set()
        d = os.path.dirname(path)
        names = set()
        for f in self.files:
            if f.endswith(".rs") and (f == path or (d not in ("src", "src/bin") and f.startswith(d + "/"))):
                names |= set(re.findall(r'Some\("([a-z][a-z0-9-]*)"\)\s*=>', read(self.top, f)))
        return names

    # -- Nix, read as text --
    def defined_nix_attrs(self):
        attrs = set()
        for text in self.nix_text.values():
            text = strip_nix_comments(text)
            for path in re.findall(r'(?m)(?:^|[{;])\s*((?:"?[A-Za-z_${}][\w\'${}-]*"?\.)*"?[A-Za-z_][\w\'-]*"?)\s*=(?![=>])', text):
                attrs |= {part.strip('"') for part in path.split(".")}
            for m in re.finditer(r"\binherit\b(?:\s*\([^)]*\))?([^;]*);", text):
                attrs |= set(re.findall(r"[A-Za-z_][\w'-]*", m.group(1)))
        return attrs

    def flake_apps(self):
        """Attributes made by a function whose body has `type = "app"`, and attribute sets that have it directly."""
        helpers, apps = set(), set()
        for text in self.nix_text.values():
            text = strip_nix_comments(text)
            for b in bindings(text):
                m = re.search(r'\btype\s*=\s*"app"\s*;', b["body"])
                if not m:
                    continue
                if b["lambda"]:
                    helpers.add(b["name"])
                elif b["body"].lstrip().startswith("{"):
                    head = b["body"][:m.start()]
                    if head.count("{") - head.count("}") == 1:  # `NAME = { type = "app"; ... }` itself
                        apps.add(b["name"])
        if helpers:
            pat = re.compile(r'(?:^|[{;])\s*"?([A-Za-z_][\w-]*)"?\s*=\s*(?:' + "|".join(map(re.escape, helpers)) + r")\b",
                             re.M)
            for text in self.nix_text.values():
                apps |= set(pat.findall(strip_nix_comments(text)))
        return apps - helpers

    # -- compose files: services, and which run the app image (entry point /bin/app) --
    def compose(self, rel):
        if rel not in self.compose_cache:
            self.compose_cache[rel] = compose_services(read(self.top, rel))
        return self.compose_cache[rel]

    def is_file(self, rel):
        rel = os.path.normpath(rel)
        return rel in self.fileset

    def is_executable(self, rel):
        return os.access(os.path.join(self.top, os.path.normpath(rel)), os.X_OK)


def strip_nix_comments(text):
    """Drops `# ...` line comments outside strings (good enough for attribute names; strings keep their text)."""
    out, i, n, state = [], 0, len(text), None
    while i < n:
        c = text[i]
        if state is None:
            if c == "#":
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            if text.startswith("''", i):
                state = "''"; out.append("''"); i += 2; continue
            if c == '"':
                state = '"'
        elif state == '"':
            if c == "\\":
                out.append(text[i:i + 2]); i += 2; continue
            if c == '"':
                state = None
        elif state == "''":
            if text.startswith("'''", i) or text.startswith("''$", i) or text.startswith("''\\", i):
                out.append(text[i:i + 3]); i += 3; continue
            if text.startswith("''", i):
                state = None; out.append("''"); i += 2; continue
        out.append(c)
        i += 1
    return "".join(out)


def bindings(text):
    """Each `name = ...;` with its body up to the next line indented as much or less (Nix as formatted by nixfmt)."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        m = re.match(r'^(\s*)(?:"?[A-Za-z_${}][\w\'${}-]*"?\.)*"?([A-Za-z_][\w\'-]*)"?\s*=(?![=>])(.*)$', line)
        if not m:
            continue
        indent = len(m.group(1))
        body = [m.group(3)]
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                if nxt.strip() in ("};", "}", ");", "];") and len(nxt) - len(nxt.lstrip()) == indent:
                    body.append(nxt)
                break
            body.append(nxt)
        text_body = "\n".join(body)
        lam = re.match(r"\s*(?:[A-Za-z_][\w'-]*(?:@\{[^}]*\})?|\{[^}]*\}(?:\s*@\s*\w+)?)\s*:(?=\s)", text_body)
        out.append({"name": m.group(2), "body": text_body, "lambda": bool(lam)})
    return out


def enum_variants(text, start):
    """Variant names (kebab-case, as clap names them) of the enum body starting at `start` (after its `{`)."""
    names, depth, i, n, expect = set(), 0, start, len(text), True
    pending_name, aliases = None, []
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("#[", i):
            j, d = i + 1, 0
            while j < n:
                d += {"[": 1, "]": -1}.get(text[j], 0)
                if d == 0:
                    break
                j += 1
            attr = text[i:j + 1]
            if depth == 0 and expect and re.match(r"#\[command\(", attr):
                m = re.search(r'\bname\s*=\s*"([^"]+)"', attr)
                pending_name = m.group(1) if m else pending_name
                aliases += re.findall(r'\b(?:visible_)?alias(?:es)?\s*=\s*\[?\s*"([^"]+)"', attr)
            i = j + 1
            continue
        c = text[i]
        if c in "{([":
            depth += 1
        elif c in "})]":
            if depth == 0:
                break
            depth -= 1
        elif c == "," and depth == 0:
            expect = True
        elif depth == 0 and expect and (c.isalpha() or c == "_"):
            m = re.match(r"[A-Za-z_]\w*", text[i:])
            ident = m.group(0)
            names.add(pending_name or re.sub(r"(?<!^)(?=[A-Z])", "-", ident).lower())
            names.update(aliases)
            pending_name, aliases, expect = None, [], False
            i += len(ident)
            continue
        i += 1
    return names


def compose_services(text):
    """{service: uses the app image as its entry point} of a compose file, read as text (no YAML library)."""
    lines = text.split("\n")
    blocks, anchors, cur, top_key = {}, {}, None, None
    services_at = None
    for line in lines:
        if re.match(r"^\S", line):
            top_key = line.split(":")[0]
            cur = None
            am = re.match(r"^([\w.-]+):\s*&([\w-]+)", line)
            if am:
                anchors[am.group(2)] = []
                cur = anchors[am.group(2)]
            services_at = top_key == "services"
            continue
        if services_at:
            sm = re.match(r"^  ([\w.-]+):\s*(?:#.*)?$", line)
            if sm:
                blocks[sm.group(1)] = []
                cur = blocks[sm.group(1)]
                continue
        if cur is not None:
            cur.append(line)
    out = {}
    for name, body in blocks.items():
        text_b = "\n".join(body)
        merged = text_b
        for ref in re.findall(r"<<:\s*\*([\w-]+)", text_b):
            merged += "\n" + "\n".join(anchors.get(ref, []))
        app_image = bool(re.search(r"(?m)^\s*image:.*(?:docker-sample/app\b|\}/app:)", merged))
        own_entry = bool(re.search(r"(?m)^\s*entrypoint:", text_b))
        out[name] = app_image and not own_entry
    return out


# ---- 1. the version ----------------------------------------------------------------------------------------------

def check_version(repo):
    where_checked = []
    default = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*VERSION)[:]?-([^}]*)\}")
    image_tag = re.compile(r"docker-sample/(?:app|httpd)\}?:v?(\d+\.\d+\.\d+[\w.+-]*)")
    for rel in repo.files:
        if rel.endswith((".md", ".lock", ".json")) or rel.startswith((".sqlx/", "target/")):
            continue
        try:
            text = read(repo.top, rel)
        except OSError:
            continue
        for no, line in enumerate(text.split("\n"), 1):
            for m in default.finditer(line):
                value = m.group(2)
                if re.fullmatch(r"v?\d+\.\d+\.\d+[\w.+-]*", value):
                    where_checked.append(f"{rel}:{no}")
                    if value.lstrip("v") != repo.version:
                        fail(f"{rel}:{no}", m.group(0), f"the default tag {value} is not Cargo.toml's version "
                             f"{repo.version}; compose cannot read Cargo.toml, so change it here too")
            for m in image_tag.finditer(line):
                where_checked.append(f"{rel}:{no}")
                if m.group(1) != repo.version:
                    fail(f"{rel}:{no}", m.group(0), f"tag {m.group(1)} is not Cargo.toml's version {repo.version}")
    return sorted(set(where_checked))


# ---- 2. the READMEs' commands ------------------------------------------------------------------------------------

def strip_comment(line):
    """The line without a shell comment (a `#` starting a word, outside quotes)."""
    q, prev = None, " "
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
            elif c == "\\" and q == '"':
                pass
        elif c in "'\"":
            q = c
        elif c == "#" and prev in " \t;&|(":
            return line[:i], line[i + 1:]
        prev = c
    return line, ""


def tokens(text):
    lex = shlex.shlex(PLACEHOLDER.sub("PLACEHOLDER", text), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError:  # an unbalanced quote (a synopsis); check what is there
        return text.split()


def simple_commands(words):
    cur = []
    skip_next = False
    for w in words:
        if skip_next:
            skip_next = False
            continue
        if w in CONTROL:
            if cur:
                yield cur
            cur = []
            continue
        if REDIRECT.match(w):
            skip_next = True
            if cur and cur[-1].isdigit():
                cur.pop()
            continue
        cur.append(w)
    if cur:
        yield cur


def check_command(repo, where, words, shown, inline=False):
    while words and words[0] in SHELL_KEYWORDS_PREFIX:
        words = words[1:]
    if not words or words[0] in SHELL_KEYWORDS_SKIP:
        return
    while words and ASSIGN.match(words[0]):
        words = words[1:]
    if not words:
        return
    prog, args = words[0], words[1:]
    checked["commands"] += 1
    if prog in WRAPPERS:
        rest = [a for a in args]
        while rest and (rest[0].startswith("-") or ASSIGN.match(rest[0])):
            rest = rest[1:]
        return check_command(repo, where, rest, shown, inline)
    if prog == "app" or prog == "httpd-start":
        return check_sub(repo, where, shown, prog, args)
    if prog in ("bash", "sh", "python3", "python"):
        opts_with_arg = {"-o", "-O", "-W", "-X", "-m"}
        i = 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] in ("-c", "-m"):
                return
            i += 2 if args[i] in opts_with_arg else 1
        if i < len(args) and not args[i].startswith("/") and "$" not in args[i]:
            if not repo.is_file(args[i]):
                fail(where, shown, f"{args[i]}: no such file in the repository")
        return
    if prog == "nix":
        if args and args[0] in ("develop", "shell") and ("-c" in args or "--command" in args):
            i = args.index("-c") if "-c" in args else args.index("--command")
            return check_command(repo, where, args[i + 1:], shown, inline)
        return  # flake references are checked on their own (check_flake_refs)
    if prog == "cargo":
        return check_cargo(repo, where, shown, args)
    if prog == "docker":
        return check_docker(repo, where, shown, args)
    if "/" in prog:
        if prog.startswith(("/", "~", "$")):
            return  # not the repository's (an absolute path, or a user's)
        if not repo.is_file(prog):
            fail(where, shown, f"{prog}: no such file in the repository")
        elif not inline and not repo.is_executable(prog):
            fail(where, shown, f"{prog} is not executable (chmod +x, or run it with bash)")
        return
    if prog not in ALLOWED:
        fail(where, shown, f"`{prog}` is neither a file of the repository nor an allowed tool "
             "(ALLOWED in .ci/docs-drift.py)")


def check_sub(repo, where, shown, binary, args):
    subs = repo.subcommands.get(binary) or set()
    if not subs:
        fail(where, shown, f"found no subcommands of {binary} in the sources (update .ci/docs-drift.py)")
        return
    words = [a for a in args if not a.startswith("-")]
    if args and args[0] in ("-h", "--help", "-V", "--version", "help"):
        return
    if not words:
        return
    if words[0] not in subs and args[0] == words[0]:
        fail(where, shown, f"`{binary} {words[0]}`: no such subcommand (there are: {', '.join(sorted(subs))})")


def check_cargo(repo, where, shown, args):
    if not args:
        return
    sub, rest = args[0], args[1:]
    after = []
    if "--" in rest:
        i = rest.index("--")
        rest, after = rest[:i], rest[i + 1:]

    def values(flag):
        out = []
        for i, a in enumerate(rest):
            if a == flag and i + 1 < len(rest):
                out.append(rest[i + 1])
            elif a.startswith(flag + "="):
                out.append(a.split("=", 1)[1])
        return out

    features = {f for v in values("--features") + values("-F") for f in re.split(r"[ ,]+", v) if f}
    for f in features - repo.features:
        fail(where, shown, f"no feature `{f}` in Cargo.toml")
    for b in values("--bin"):
        if b not in repo.bins:
            fail(where, shown, f"no binary `{b}` in Cargo.toml (there are: {', '.join(sorted(repo.bins))})")
    for t in values("--test"):
        if t not in repo.tests:
            fail(where, shown, f"no test target `{t}` (Cargo.toml [[test]], tests/{t}.rs or tests/{t}/main.rs)")
    for e in values("--example"):
        if e not in repo.examples:
            fail(where, shown, f"no example `{e}` in Cargo.toml")
        else:
            missing = set(repo.examples[e].get("required-features", [])) - features
            if missing and "--all-features" not in rest:
                fail(where, shown, f"example `{e}` needs --features {','.join(sorted(missing))}")
    if sub == "run" and not values("--example"):
        bins = values("--bin")
        binary = bins[0] if bins else repo.default_run or (next(iter(repo.bins)) if len(repo.bins) == 1 else None)
        if binary is None:
            fail(where, shown, "`cargo run` without --bin: Cargo.toml has several binaries and no default-run")
        elif binary in repo.subcommands and after:
            check_sub(repo, where, shown, binary, after)


def check_docker(repo, where, shown, args):
    if args[:1] == ["stack"] and "deploy" in args:
        for i, a in enumerate(args):
            if a in ("-c", "--compose-file") and i + 1 < len(args):
                if not repo.is_file(args[i + 1]):
                    fail(where, shown, f"{args[i + 1]}: no such compose file")
        return
    if args[:1] != ["compose"]:
        return
    files, i, rest = [], 1, args[1:]
    global_with_arg = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory",
                       "--ansi", "--progress", "--parallel"}
    while rest and rest[0].startswith("-"):
        if rest[0] in ("-f", "--file") and len(rest) > 1:
            files.append(rest[1])
        if rest[0] in global_with_arg:
            rest = rest[2:]
        else:
            rest = rest[1:]
    ok_files = []
    for f in files:
        if "$" in f or f.startswith("/"):
            continue
        if not repo.is_file(f):
            fail(where, shown, f"{f}: no such compose file")
        else:
            ok_files.append(f)
    if not rest or not ok_files or len(ok_files) != len(files):
        return
    services = {}
    for f in ok_files:
        services.update(repo.compose(f))
    sub, rest = rest[0], rest[1:]
    with_arg = {"-e", "--env", "-u", "--user", "-w", "--workdir", "--entrypoint", "--name", "-v", "--volume",
                "-l", "--label", "-p", "--publish", "--index", "--scale", "--wait-timeout", "-t", "--timeout",
                "--tail", "-n", "--since", "--until", "--pull", "--cap-add", "--cap-drop"}
    positional, i = [], 0
    while i < len(rest):
        a = rest[i]
        if a.startswith("-"):
            i += 2 if a in with_arg else 1
            continue
        positional.append(a)
        if sub in ("exec", "run"):
            break
        i += 1
    if sub in ("exec", "run"):
        if not positional:
            return
        svc, cmd = positional[0], rest[i + 1:]
        if "$" in svc:
            return
        if svc not in services:
            fail(where, shown, f"no service `{svc}` in {', '.join(ok_files)}")
            return
        if sub == "exec" and cmd[:1] == ["app"]:
            check_sub(repo, where, shown, "app", cmd[1:])
        elif sub == "run" and services[svc] and cmd and "--entrypoint" not in rest[:i]:
            check_sub(repo, where, shown, "app", cmd)
    elif sub in ("logs", "up", "start", "stop", "restart", "ps", "pull", "rm", "kill", "create", "top"):
        for svc in positional:
            if svc not in services and "$" not in svc:
                fail(where, shown, f"no service `{svc}` in {', '.join(ok_files)}")


FLAKE_REF = re.compile(r"(?<![\w/.#-])\.#([A-Za-z0-9_][\w.-]*)")
NIX_SUB = re.compile(r"\bnix\s+(run|build|eval|develop|shell|bundle|path-info|derivation\s+show|flake\s+\w+)\b")


def check_flake_ref(repo, where, line, pos, name):
    checked["flake refs"] += 1
    subs = [m for m in NIX_SUB.finditer(line[:pos])]
    sub = subs[-1].group(1) if subs else None
    parts = name.rstrip(".").split(".")
    shown = f".#{name}"
    if parts[0] in OUTPUT_TYPES and len(parts) >= 2:
        if parts[1] not in repo.systems:
            fail(where, shown, f"`{parts[1]}` is not one of flake.nix's systems ({', '.join(sorted(repo.systems))})")
            return
        if len(parts) >= 3:
            pool = repo.apps if parts[0] == "apps" else repo.nix_attrs
            if parts[2] not in pool:
                fail(where, shown, f"no {parts[0]} attribute `{parts[2]}` in flake.nix or nix/")
        return
    if parts[0] in PLACEHOLDERS or re.fullmatch(r"[A-Z_]+", parts[0]):
        return
    if sub == "run" and len(parts) == 1:
        if parts[0] not in repo.apps:
            fail(where, f"nix run {shown}", f"no flake app `{parts[0]}` (apps: {', '.join(sorted(repo.apps))})")
    elif parts[0] not in repo.nix_attrs:  # `nix run .#applayer.copyTo`: a package's attribute (Nix falls back)
        fail(where, shown, f"no attribute `{parts[0]}` defined in flake.nix or nix/")


def readmes(repo):
    return [f for f in repo.files if os.path.basename(f) == "README.md"]


def check_readme(repo, rel):
    lines = read(repo.top, rel).split("\n")
    fence, fence_lang, pending, pending_no = None, None, "", None
    for no, line in enumerate(lines, 1):
        where = f"{rel}:{no}"
        fm = re.match(r"^\s*(```+|~~~+)\s*([\w-]*)", line)
        if fm and (fence is None or fm.group(1).startswith(fence)):
            if fence is None:
                fence, fence_lang = fm.group(1), fm.group(2).lower()
            else:
                fence = None
            continue
        for m in FLAKE_REF.finditer(line):
            check_flake_ref(repo, where, line, m.start(), m.group(1))
        if fence is not None:
            if fence_lang not in SHELL_FENCES:
                continue
            code = line
            if fence_lang in ("console", "shell-session"):
                if not re.match(r"^\s*[$#] ", code):
                    continue
                code = re.sub(r"^\s*[$#] ", "", code)
            code, _ = strip_comment(code)
            if pending_no is None:
                pending_no = no
            if code.rstrip().endswith("\\"):
                pending += code.rstrip()[:-1] + " "
                continue
            text, first = pending + code, pending_no
            pending, pending_no = "", None
            if not text.strip():
                continue
            for cmd in simple_commands(tokens(text)):
                check_command(repo, f"{rel}:{first}", cmd, text.strip())
            continue
        # prose: the inline code spans that start like a command
        for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line):
            check_inline(repo, where, span.replace("\\|", "|"))


INLINE_PROGRAMS = {"app", "httpd-start", "nix", "cargo", "docker", "bash", "sh", "python3"}


def check_inline(repo, where, span):
    words = tokens(span)
    while words and ASSIGN.match(words[0]):
        words = words[1:]
    if not words:
        return
    first = words[0]
    path_like = re.fullmatch(r"\.?[\w.-]+(/[\w.-]+)+\.(sh|py)", first)
    if first not in INLINE_PROGRAMS and not path_like:
        return
    if first == "docker" and words[1:2] != ["compose"]:
        return
    if first == "app" and len(words) == 1:
        return  # the binary's name
    if first == "nix" and len(words) < 2:
        return
    cmd = next(simple_commands(words), [])
    # a synopsis (`app migrate [--refuse-newer]`, `logs|ps|down`): check up to the first alternative or option list
    cut = [i for i, w in enumerate(cmd) if w.startswith("[") or "|" in w]
    if cut:
        cmd = cmd[:cut[0]]
    check_command(repo, where, cmd, span, inline=True)


def main():
    verbose = "--verbose" in sys.argv[1:]
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() \
        or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    repo = Repo(top)
    sites = check_version(repo)
    if not sites:
        fail("compose/dev.yml", "${DEV_VERSION:-...}", "found no default tag to compare with Cargo.toml "
             "(moved? update .ci/docs-drift.py)")
    for what, found in (("app subcommands", repo.subcommands["app"]),
                        ("httpd-start subcommands", repo.subcommands["httpd-start"]),
                        ("flake apps", repo.apps), ("flake systems", repo.systems)):
        if not found:
            fail("docs-drift", what, "none found in the sources: they moved or changed shape; update "
                 ".ci/docs-drift.py so that it finds them again")
        elif verbose:
            print(f"docs-drift: {what}: {' '.join(sorted(found))}")
    files = readmes(repo)
    for rel in files:
        check_readme(repo, rel)
    for line in failures:
        print(f"docs-drift: FAIL {line}")
    print(f"docs-drift: version {repo.version}: {len(sites)} default tag(s) ({', '.join(sites)}); "
          f"{checked['commands']} commands and {checked['flake refs']} flake references in {len(files)} READMEs; "
          f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
