"""Assets of earlier releases: a page loaded before a deploy still gets its release's hashed CSS after it, for
STATIC_KEEP_RELEASES (2, env/live.env) releases back; older ones answer 404 (src/bin/httpd-start/releases.rs,
`@earlier_releases` in nginx/httpd.conf, the live-static-releases volume of compose/live.yml).

The deploy test (deploy.py) calls `page_css` before and after deploying N+1, whose stand-in has a changed CSS file
(tests/e2e/run.sh), and `check_both_served`. `later_releases` then starts more httpd releases, each N+1's image
with one more hashed file (a commit of it: only the asset list differs, which is what makes a release), and checks
what is still served after each."""

import os
import re
import tempfile

from harness import TAG, TAG_NEXT, check, log, request, run, wait_http

CSS_LINK = re.compile(rb'href="(/static/[^"?#]+\.[0-9a-f]{8}\.css)"')
HTTPD_IMAGE = os.environ.get("HTTPD_IMAGE", "docker-sample/httpd")


def page_css(port):
    """The hashed CSS path the home page links to, or None."""
    r = request(port, "GET", "/")
    m = CSS_LINK.search(r.body or b"") if r.status == 200 else None
    return m.group(1).decode() if m else None


def statuses(port, path, tries=8):
    """Several requests: the edge spreads them over both httpd replicas."""
    return sorted({request(port, "GET", path).status for _ in range(tries)}, key=str)


def check_both_served(port, css_n, css_next):
    """Right after the deploy to N+1: the page links N+1's CSS, and N's still answers 200 from every replica."""
    check("assets: N+1's page links another CSS file than N's (the N+1 stand-in changed it)",
          css_n and css_next and css_n != css_next, f"N {css_n}, N+1 {css_next}")
    got = {"N": statuses(port, css_n), "N+1": statuses(port, css_next)}
    check("assets: after the deploy, N's and N+1's hashed CSS both answer 200", got == {"N": [200], "N+1": [200]},
          f"{got}")


def _release_image(n):
    """N+1's httpd image plus one hashed file `release<n>.<8 hex>.css`: another release of the same site."""
    tag = f"{TAG}-release{n}"
    name = f"release{n}.{n:08x}.css"
    cid = run(["docker", "create", f"{HTTPD_IMAGE}:{TAG_NEXT}"], check_rc=True).stdout.strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(f"/* release {n} */\n")
            os.chmod(path, 0o644)
            run(["docker", "cp", path, f"{cid}:/srv/static/{name}"], check_rc=True)
        run(["docker", "commit", cid, f"{HTTPD_IMAGE}:{tag}"], check_rc=True)
    finally:
        run(["docker", "rm", "-f", cid])
    return tag, f"/static/{name}"


def _start_httpd(live, tag):
    """Only the httpd replicas on `tag` (app, tasks and the edge stay): the step a deploy takes for httpd."""
    p = live.compose("up", "--detach", "--no-deps", "--wait", "--wait-timeout", "120", "httpd",
                     env_extra={"APP_VERSION": tag}, timeout=180)
    return p.returncode == 0, p.stderr.strip()[-600:]


def later_releases(live, port, css_n, css_next):
    """After the rollback to N (itself a start of release N): releases N+2, N+3 and N+4, each N+1's files plus its
    own. With 2 kept, a file answers 200 while one of the last three releases started has it, else 404: N's CSS
    until N+4, N+1's as long as the later releases carry it too. Finally N is started again, as it was."""
    if not (css_n and css_next):
        check("assets: later releases (needs N's and N+1's CSS paths)", False, f"N {css_n}, N+1 {css_next}")
        return
    # Releases in the order they last started (a rollback starts N again), each with its hashed CSS files.
    started = [("N+1", {css_next}), ("N", {css_n})]
    paths = {"N": css_n, "N+1": css_next}
    try:
        for n in (2, 3, 4):
            tag, own = _release_image(n)
            ok, err = _start_httpd(live, tag)
            served = ok and wait_http(port, own, 200, timeout=30) is not None
            check(f"assets: release N+{n} (httpd only) started and serves its own file", served, err)
            if not served:
                return
            started.append((f"N+{n}", {css_next, own}))
            paths[f"N+{n}"] = own
            kept = set().union(*(files for _, files in started[-3:]))
            want = {what: [200] if path in kept else [404] for what, path in paths.items()}
            got = {what: statuses(port, path, tries=4) for what, path in paths.items()}
            log(f"assets: after N+{n}: {got}")
            check(f"assets: after release N+{n}, the files of the last 3 releases answer 200, others 404",
                  got == want, f"got {got}, want {want}")
        check("assets: N's CSS, three releases back, answers 404", paths and got.get("N") == [404], f"{got}")
    finally:
        ok, err = _start_httpd(live, TAG)
        check("assets: httpd back on N after the release checks", ok and wait_http(port, css_n, 200, 30) is not None,
              err)
