"""The live stack's edge as a user meets it: HTTPS with the README's certificate, the redirect from HTTP, HSTS,
TLS versions and ciphers, a certificate problem refused at start, the domain set at run time on the released httpd
image. Run by phase_live.py against its running stack (the abuse limits: abuse_limits.py)."""

import json
import os
import socket
import ssl
import time

from harness import (
    CA_FILE,
    HSTS_VALUE,
    LIVE_HTTP_PORT,
    LIVE_PORT,
    REPO,
    TAG,
    TEST_DOMAIN,
    check,
    headers_once,
    log,
    manifest_names,
    request,
    run,
    security_headers,
)

HTTPD_IMAGE = json.load(open(os.path.join(REPO, "nix", "image.json")))["httpd"]["image"]
EDGE_CONF = os.path.join(REPO, "nginx", "edge.conf")


def handshake(version_min, version_max, ciphers=None):
    """A TLS handshake with the edge limited to these versions (and TLS 1.2 ciphers); returns (version, error)."""
    ctx = ssl.create_default_context(cafile=CA_FILE)
    # Let the client offer what the server must refuse: OpenSSL's own floor would refuse TLS 1.0/1.1 before
    # anything reached the server, and the check could not fail.
    ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    ctx.minimum_version, ctx.maximum_version = version_min, version_max
    try:
        with socket.create_connection(("127.0.0.1", LIVE_PORT), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version(), None
    except (ssl.SSLError, OSError) as e:
        return None, str(e)


def tls_and_redirect(live):
    r = request(LIVE_HTTP_PORT, "GET", "/some/page?x=1", host=f"localhost:{LIVE_HTTP_PORT}")
    want = f"https://localhost:{LIVE_PORT}/some/page?x=1"
    check("edge: plain HTTP only redirects: 301 to the same path on HTTPS",
          r.status == 301 and r.headers.get("location") == want, f"{r!r} location={r.headers.get('location')}")
    r = request(LIVE_HTTP_PORT, "GET", "/.well-known/acme-challenge/unknown-token", host="localhost")
    check("edge: HTTP answers ACME http-01 challenge paths itself (404 for an unknown token, not a redirect)",
          r.status == 404, repr(r))
    r = request(LIVE_HTTP_PORT, "GET", "/", host="evil.example.com")
    check("edge: HTTP with an unknown Host gets no answer (connection closed)", r.status is None, repr(r))

    r = request(LIVE_PORT, "GET", "/")
    check("edge: HTTPS serves the page with the README's self-signed certificate (verified)", r.status == 200, repr(r))
    check("edge: HSTS on HTTPS, once, the configured value", not headers_once(r, {"Strict-Transport-Security": HSTS_VALUE}),
          f"{r.header_values('strict-transport-security')}")
    bad = headers_once(r, security_headers())
    check("edge: every security header exactly once over HTTPS", not bad, f"bad: {bad}")
    r = request(LIVE_PORT, "GET", "/", host=f"{TEST_DOMAIN}:{LIVE_PORT}")
    check(f"edge: the run-time domain {TEST_DOMAIN} (LIVE_ENV_FILE's ALLOWED_HOSTS) is served", r.status == 200,
          repr(r))

    got = {}
    for name, lo, hi, ciphers in (
        ("TLS 1.3", ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3, None),
        ("TLS 1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, None),
        ("TLS 1.1", ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1, None),
        ("TLS 1.0", ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1, None),
        ("TLS 1.2 CBC", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"),
    ):
        got[name] = handshake(lo, hi, ciphers)
    log("edge: handshakes: " + "; ".join(f"{k}: {v or e}" for k, (v, e) in got.items()))
    check("edge: TLS 1.3 and 1.2 accepted", got["TLS 1.3"][0] == "TLSv1.3" and got["TLS 1.2"][0] == "TLSv1.2",
          f"{got['TLS 1.3']} {got['TLS 1.2']}")
    # The server's own alert (protocol version / handshake failure), not a client that refused to try.
    refused = {k: got[k][1] or "" for k in ("TLS 1.1", "TLS 1.0", "TLS 1.2 CBC")}
    check("edge: TLS 1.0, 1.1 and non-AEAD TLS 1.2 ciphers refused by the server (Mozilla intermediate)",
          all(got[k][0] is None and ("ALERT" in e.upper() or "alert" in e) for k, e in refused.items()),
          f"{refused}")


def refused_certificate():
    """The edge with a missing, then an unreadable, certificate: it must stop at start with one clear line."""
    ref = f"{HTTPD_IMAGE}:{TAG}"
    unreadable = os.path.join(os.path.dirname(CA_FILE), "..", "unreadable.key")
    with open(unreadable, "w") as f:
        f.write("not for you\n")
    os.chmod(unreadable, 0o600)  # root-owned 0600: the edge's user (1000) cannot read it
    base = ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--user", "1000:1000", "--cap-drop", "ALL",
            "-v", f"{EDGE_CONF}:/etc/nginx/edge.conf:ro", "--entrypoint", "/bin/httpd-start"]
    for label, extra, word in (
        ("missing", ["-e", "TLS_CERT_FILE=/run/secrets/none.crt",
                     "-v", f"{os.path.join(os.path.dirname(CA_FILE), 'tls.key')}:/run/secrets/tls_key:ro"],
         "TLS_CERT_FILE"),
        ("unreadable", ["-v", f"{os.path.abspath(unreadable)}:/run/secrets/tls_key:ro",
                        "-v", f"{CA_FILE}:/run/secrets/tls_cert:ro"], "TLS_KEY_FILE"),
    ):
        p = run(base[:2] + extra + base[2:] + [ref, "run", "/etc/nginx/edge.conf"], timeout=60)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        check(f"edge: a {label} TLS file stops the start with one clear line, exit 1",
              p.returncode == 1 and len(lines) == 1 and word in lines[0], f"exit {p.returncode}: {lines}")
    os.remove(unreadable)


def domain_at_run_time():
    """The released httpd image serves a domain given at run time: no rebuild, only ALLOWED_HOSTS."""
    ref = f"{HTTPD_IMAGE}:{TAG}"
    name = f"e2e-domain-{os.getpid()}"
    p = run(["docker", "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
             "-e", "ALLOWED_HOSTS=shop.example.test", "-p", "127.0.0.1::8080", ref], timeout=60)
    try:
        if not check("edge: the released httpd image starts with ALLOWED_HOSTS=shop.example.test",
                     p.returncode == 0, p.stderr.strip()[-300:]):
            return
        port = int(run(["docker", "port", name, "8080/tcp"]).stdout.split(":")[-1])
        _, hashed = manifest_names()
        deadline, r = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            r = request(port, "GET", f"/static/{hashed}", host="shop.example.test")
            if r.status is not None:
                break
            time.sleep(0.2)
        other = request(port, "GET", f"/static/{hashed}", host="localhost")
        check("edge: the same image, rebuilt for nothing, serves shop.example.test and refuses localhost (421)",
              r is not None and r.status == 200 and other.status == 421, f"{r!r} / {other!r}")
    finally:
        run(["docker", "rm", "-f", name], timeout=60)
