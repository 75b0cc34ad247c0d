"""Mozilla's HTTP Observatory, run locally against the live stack: the suite requires grade A+ with 0 failed tests.

How it works
  The scanner is the npm package @mdn/mdn-http-observatory (the code behind developer.mozilla.org/observatory),
  pinned with its whole dependency tree in tests/e2e/observatory/package-lock.json and installed, outside the
  repository's tracked files, by `bash tests/e2e/observatory/install.sh` into target/observatory (OBSERVATORY_DIR
  overrides; .ci/e2e.sh runs it). grade() runs `node tests/e2e/observatory/scan.mjs`, which calls the package's own
  `scan(host)` (what its CLI `mdn-http-observatory-scan` calls) and prints its JSON. Nothing of the scanner is
  re-implemented or patched: its 10 tests, their score modifiers and its grade are the package's.

  The scanner fetches http://HOST/ (port 80) and https://HOST/ (port 443), follows redirects, then GETs /robots.txt
  and sends a CORS preflight. The stack is published elsewhere (127.0.0.1:<http_port> and :<https_port>), so
  scan.mjs maps, inside the Node process only, connections to HOST:80 -> 127.0.0.1:http_port and HOST:443 ->
  127.0.0.1:https_port (HOST on another port, e.g. a redirect to https://HOST:8443/, goes to 127.0.0.1 on that port;
  any other host is refused). This is an /etc/hosts line plus a port forward for one process: no root, no ports
  80/443 taken, nothing changed on the machine; the scanner still sees HOST in its URLs, the Host header, TLS SNI
  and the certificate check, and Host carries no port, as for a site on 80/443. The scanner has no loopback
  restriction in its scan function or CLI (its web API, not used here, refuses IP addresses, names whose last label
  is not a public TLD, such as `localhost`, and names that do not resolve).

  TLS must verify, or the scanner retries without verification and fails HSTS and redirection: HOST must be a name
  in the certificate, and `ca_file` (the certificate itself when self-signed, as the README's is, or its CA) is given
  to Node as NODE_EXTRA_CA_CERTS. The scanner's preload list is empty (install.sh writes `{}`): nothing passes by
  being preloaded.

What the stack must send for A+ with 0 failed tests (from the package's source, checked on a prototype):
  https://HOST/ answers 200 (the scan aborts on a 4xx but 401/403, or a 5xx) with, once each:
    Strict-Transport-Security  max-age >= 15552000 (180 days), one header (two are "invalid")
    Content-Security-Policy    no 'unsafe-inline'/data:/broad sources in script-src (or default-src), object-src
                               restricted, no 'unsafe-eval', no http: sources; frame-ancestors counts for XFO
    X-Content-Type-Options     nosniff
    Referrer-Policy            no-referrer, same-origin, strict-origin or strict-origin-when-cross-origin
    X-Frame-Options            DENY/SAMEORIGIN (not needed when the CSP has frame-ancestors)
    every cookie               Secure (HSTS does not excuse it: "without secure flag but protected by HSTS" is a
                               failed test); CSRF cookies SameSite; session cookies HttpOnly
    no Access-Control-Allow-Origin echoing the origin with credentials; scripts same-origin, or https + integrity
  http://HOST/ answers a redirect straight to https://HOST[:port]/ (same host name; not http first).
  A missing HTTP port would make the scanner's redirection test pass as "not needed"; check() refuses that.

Use (phase_live.py, against the running stack):
    from observatory import check as observatory_check
    observatory_check(LIVE_PORT, LIVE_HTTP_PORT, host="localhost", ca_file=CA_FILE)
By hand: python3 tests/e2e/observatory.py --https-port 8443 --http-port 8001 --host localhost --ca secrets/tls.crt
Needs: node >= 20 and the installed scanner; when either is missing, grade() returns an error saying what to install
and check() FAILS (never a silent pass).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCAN_JS = os.path.join(HERE, "observatory", "scan.mjs")
INSTALL = "bash tests/e2e/observatory/install.sh"
WANT_GRADE = "A+"


def scanner_package():
    """The installed package directory (OBSERVATORY_DIR or target/observatory)."""
    base = os.environ.get("OBSERVATORY_DIR") or os.path.join(REPO, "target", "observatory")
    return os.path.join(base, "node_modules", "@mdn", "mdn-http-observatory")


def missing():
    """What is missing to run the scanner (one line saying what to install), or None."""
    node = shutil.which("node")
    if not node:
        return f"no `node` on PATH: install Node.js >= 20 with npm, then run `{INSTALL}`"
    try:
        major = int(subprocess.run([node, "-p", "process.versions.node.split('.')[0]"], capture_output=True,
                                   text=True, timeout=30).stdout.strip())
    except (ValueError, OSError, subprocess.SubprocessError):
        major = 0
    if major < 20:
        return "node is older than 20: the scanner needs Node.js >= 20"
    pkg = scanner_package()
    for f in ("src/index.js", "conf/hsts-preload.json"):
        if not os.path.isfile(os.path.join(pkg, f)):
            return f"the scanner is not installed ({os.path.join(pkg, f)} missing): run `{INSTALL}` (npm registry)"
    return None


class Result:
    """One scan: grade (e.g. "A+"), score (int), failed (names of failed tests), details (per test: pass, result,
    scoreModifier; and scan/connections), error (None, or why there is no grade)."""

    def __init__(self, grade=None, score=None, failed=None, details=None, error=None, seconds=0.0):
        self.grade, self.score, self.failed = grade, score, failed if failed is not None else []
        self.details, self.error, self.seconds = details or {}, error, seconds

    @property
    def ok(self):
        return not self.error and self.grade == WANT_GRADE and not self.failed

    def tests(self):
        return self.details.get("tests", {})

    def summary(self):
        if self.error:
            return f"no grade: {self.error}"
        t = self.tests()
        failed = [f"{n}: {t[n]['result']} ({t[n]['scoreModifier']:+d})" for n in self.failed]
        bonus = [f"{n} {v['scoreModifier']:+d}" for n, v in t.items() if v.get("pass") and v.get("scoreModifier")]
        return (f"{self.grade} score {self.score}, {len(t) - len(self.failed)}/{len(t)} tests passed"
                + (f"; FAILED {'; '.join(failed)}" if failed else "") + (f"; bonus {', '.join(bonus)}" if bonus else ""))


def grade(https_port, http_port, host="localhost", ca_file=None, timeout=120):
    """Scan the stack published on 127.0.0.1 (HTTPS on https_port, HTTP on http_port) as https://host/ and
    http://host/, trusting ca_file. Returns a Result and prints a `FIGURE: observatory ...` line. Never raises."""
    started = time.monotonic()
    why = missing()
    if why:
        res = Result(error=why)
    elif ca_file and not os.path.isfile(ca_file):
        res = Result(error=f"CA file {ca_file} not found")
    else:
        env = dict(os.environ)
        env.pop("NODE_OPTIONS", None)
        if ca_file:
            env["NODE_EXTRA_CA_CERTS"] = os.path.abspath(ca_file)
        else:
            env.pop("NODE_EXTRA_CA_CERTS", None)
        env.pop("NODE_TLS_REJECT_UNAUTHORIZED", None)  # never scan with verification turned off
        cmd = ["node", SCAN_JS, "--package", scanner_package(), "--host", host,
               "--http-port", str(http_port), "--https-port", str(https_port)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            out = json.loads(p.stdout) if p.stdout.strip() else {}
        except subprocess.TimeoutExpired:
            out, p = {"error": f"scan took more than {timeout} s"}, None
        except (OSError, ValueError) as e:
            out, p = {"error": f"{type(e).__name__}: {e}"}, None
        if "scan" in out and "tests" in out:
            tests = {name: {k: v for k, v in t.items() if k != "scoreDescription"} for name, t in out["tests"].items()}
            for name, t in tests.items():
                t["description"] = " ".join(str(out["tests"][name].get("scoreDescription") or "")
                                            .replace("<p>", "").replace("</p>", "").replace("<code>", "")
                                            .replace("</code>", "").split())
            s = out["scan"]
            res = Result(s.get("grade"), s.get("score"), sorted(n for n, t in tests.items() if not t.get("pass")),
                         {"scan": {k: v for k, v in s.items() if k != "responseHeaders"}, "tests": tests,
                          "headers": s.get("responseHeaders", {}), "connections": out.get("connections", [])})
            if s.get("testsFailed") != len(res.failed):  # the scanner's own count agrees with the per-test flags
                res.error = f"scanner counts {s.get('testsFailed')} failed tests, its tests say {len(res.failed)}"
        else:
            err = out.get("error") or (f"scan.mjs exited {p.returncode}: {(p.stderr or p.stdout).strip()[-600:]}"
                                      if p else "no output")
            res = Result(error=err, details={"connections": out.get("connections", [])})
    res.seconds = time.monotonic() - started
    failed = ",".join(res.failed) or "none"
    print(f"FIGURE: observatory {host} (http {http_port}, https {https_port}): "
          + (f"grade {res.grade} score {res.score} failed {len(res.failed)} ({failed})" if not res.error
             else f"no grade ({res.error})") + f", {res.seconds:.1f} s", flush=True)
    return res


def requirements(res):
    """What check() demands beyond the grade, as a list of problems: the scan really went through HTTP -> redirect
    -> verified HTTPS (the scanner passes redirection when the HTTP port does not answer at all)."""
    problems = []
    t = res.tests()
    redir = t.get("redirection", {})
    if redir.get("result") != "redirection-to-https":
        problems.append(f"redirection: {redir.get('result')} (want redirection-to-https: the HTTP port must answer "
                        f"with a redirect straight to https on the same host)")
    route = redir.get("route") or []
    if len(route) != 2 or not route[0].startswith("http://") or not route[-1].startswith("https://"):
        problems.append(f"redirect route {route} (want http://host/ -> https://host[:port]/)")
    hsts = t.get("strict-transport-security", {})
    if hsts.get("result") == "hsts-invalid-cert":
        problems.append("the scanner could not verify the certificate (host name not in it, or CA not given)")
    if res.details.get("scan", {}).get("statusCode") != 200:
        problems.append(f"https://host/ answered {res.details.get('scan', {}).get('statusCode')}, not 200")
    return problems


def check(https_port, http_port, host="localhost", ca_file=None, label="live", check_fn=None):
    """grade() as suite checks: A+ with 0 failed tests, and a scan that went HTTP -> redirect -> verified HTTPS.
    check_fn defaults to harness.check. Returns the Result."""
    if check_fn is None:
        from harness import check as check_fn  # imported late: harness needs the suite's environment
    res = grade(https_port, http_port, host=host, ca_file=ca_file)
    check_fn(f"{label}: Mozilla HTTP Observatory (local scan of https://{host}/) grades A+ with 0 failed tests",
             res.ok, res.summary())
    problems = ["no scan"] if res.error else requirements(res)
    check_fn(f"{label}: the Observatory scan went HTTP -> one redirect -> HTTPS with a verified certificate, "
             f"page 200", not problems,
             "; ".join(problems) if problems else
             f"route {' -> '.join(res.tests()['redirection']['route'])}; connections "
             f"{', '.join(sorted(set(res.details.get('connections', []))))}")
    return res


def main():
    ap = argparse.ArgumentParser(description="Grade a local stack with Mozilla's HTTP Observatory (A+, 0 failed).")
    ap.add_argument("--https-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--host", default="localhost", help="a name in the certificate (default localhost)")
    ap.add_argument("--ca", dest="ca_file", help="the certificate or CA to trust (e.g. secrets/tls.crt)")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    a = ap.parse_args()
    results = []

    def local_check(name, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f" -- {detail}" if detail else ""), flush=True)

    res = check(a.https_port, a.http_port, host=a.host, ca_file=a.ca_file, label="observatory", check_fn=local_check)
    if a.json:
        print(json.dumps({"grade": res.grade, "score": res.score, "failed": res.failed, "error": res.error,
                          **res.details}, indent=2))
    else:
        for name, t in res.tests().items():
            print(f"  {'pass' if t.get('pass') else 'FAIL'} {name:30} {t.get('scoreModifier', 0):+3d} "
                  f"{t.get('result')}")
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
